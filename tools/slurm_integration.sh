#!/usr/bin/env bash
# End-to-end check of profiles/slurm on a throwaway one-node Slurm cluster on this host.
#
#   tools/slurm_integration.sh                # smoke workflow if config/smoke.yaml exists, else --selftest
#   tools/slurm_integration.sh --selftest     # built-in 3-stage workflow (4 Slurm jobs + local `all`)
#   tools/slurm_integration.sh --smoke        # snakemake all --profile profiles/slurm --configfile config/smoke.yaml
#                                             #   (results_dir in the work folder, not results/smoke)
#   tools/slurm_integration.sh -- CMD ARGS    # any command, run from the repository root (without slurmdbd
#                                             #   add --slurm-status-command squeue to a snakemake command)
#
# What it does: installs Debian's slurmctld/slurmd/slurm-client/munge when missing, starts a private
# munged, slurmctld and slurmd (own socket, ports, key, spool and state under $RESRANK_SLURM_DIR,
# default /tmp/resrank-slurm; /etc/munge is not used; /etc/slurm/slurm.conf is a symlink to the
# private config while the run lasts, because the jobstep plugin drops SLURM_CONF), waits until
# the node is idle, runs the workflow through the Slurm executor, prints the Slurm job records and
# checks that every non-local Snakemake job was an sbatch job that COMPLETED with exit code 0:0.
# Daemons are stopped on exit (also on failure or Ctrl-C); a rerun first removes what a killed
# earlier run left behind, so the script is idempotent.
#
# Job accounting: by default there is no slurmdbd (it needs MariaDB). Completed jobs are then
# recorded by slurmctld's job-completion plugin (JobCompType=jobcomp/filetxt) and listed with
# `sacct --completion`; plain `sacct` answers "accounting storage is disabled", so Snakemake is told
# to poll job states with `squeue` (--slurm-status-command squeue, MinJobAge=900 keeps finished
# jobs visible). RESRANK_SLURM_ACCOUNTING=slurmdbd installs MariaDB and slurmdbd as well, and
# Snakemake then polls with `sacct` as it does on a production cluster.
#
# Exit codes: 0 passed, 1 failed, 77 skipped (reason printed as "SKIP: ..."; no root, no apt-get,
# packages not installable, a real /etc/slurm/slurm.conf present, or RESRANK_SLURM_SKIP set).
#
# Environment: RESRANK_SLURM_DIR (work folder), RESRANK_SLURM_KEEP=1 (keep it after success),
# RESRANK_SLURM_TIMEOUT (seconds for the workflow, default 1800), RESRANK_SLURM_ACCOUNTING
# (jobcomp | slurmdbd), RESRANK_SLURM_SKIP (skip with that reason).
set -Eeuo pipefail

readonly SKIP_RC=77
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${RESRANK_SLURM_DIR:-/tmp/resrank-slurm}
KEEP=${RESRANK_SLURM_KEEP:-0}
TIMEOUT=${RESRANK_SLURM_TIMEOUT:-1800}
ACCOUNTING=${RESRANK_SLURM_ACCOUNTING:-jobcomp}
CLUSTER=resrank-ci

log() { printf '[slurm-it] %s\n' "$*"; }
skip() { printf 'SKIP: %s\n' "$*"; exit "$SKIP_RC"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
MODE=""
CMD=()
while (($#)); do
  case $1 in
    --selftest) MODE=selftest; shift ;;
    --smoke) MODE=smoke; shift ;;
    --) shift; MODE=custom; CMD=("$@"); break ;;
    -h|--help) sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (see --help)" ;;
  esac
done
if [[ -z $MODE ]]; then
  if [[ -f $REPO/config/smoke.yaml ]]; then MODE=smoke; else MODE=selftest; fi
fi
[[ $MODE == custom && ${#CMD[@]} -eq 0 ]] && fail "no command after --"
case $ACCOUNTING in jobcomp|slurmdbd) ;; *) fail "RESRANK_SLURM_ACCOUNTING must be jobcomp or slurmdbd" ;; esac

# ---------------------------------------------------------------- preflight (skip, never fail)
[[ -n ${RESRANK_SLURM_SKIP:-} ]] && skip "RESRANK_SLURM_SKIP=${RESRANK_SLURM_SKIP}"
[[ $(uname -s) == Linux ]] || skip "needs Linux (found $(uname -s))"
((EUID == 0)) || skip "needs root: installs packages and runs slurmctld/slurmd/munged as root (run 'sudo make test-slurm')"
NODE=$(hostname -s 2>/dev/null || true)
[[ -n $NODE ]] || skip "'hostname -s' gives no host name"

need_cmds=(slurmctld slurmd sbatch squeue sinfo scontrol scancel sacct munged mungekey munge unmunge)
pkgs=(slurmctld slurmd slurm-client munge)
if [[ $ACCOUNTING == slurmdbd ]]; then
  need_cmds+=(slurmdbd sacctmgr mariadbd mariadb-install-db mariadb)
  pkgs+=(slurmdbd mariadb-server)
fi
missing_cmds() { local c; for c in "${need_cmds[@]}"; do command -v "$c" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null 2>&1 || echo "$c"; done; }
export PATH=$PATH:/usr/sbin:/sbin
if [[ -n $(missing_cmds) ]]; then
  command -v apt-get >/dev/null 2>&1 || skip "Slurm/munge missing ($(missing_cmds | xargs)) and no apt-get to install them"
  log "installing ${pkgs[*]} (apt-get, noninteractive)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get -y -q install --no-install-recommends "${pkgs[@]}" >"/tmp/resrank-slurm-apt.log" 2>&1; then
    apt-get -q update >>"/tmp/resrank-slurm-apt.log" 2>&1 || true
    apt-get -y -q install --no-install-recommends "${pkgs[@]}" >>"/tmp/resrank-slurm-apt.log" 2>&1 \
      || skip "apt-get could not install ${pkgs[*]} (see /tmp/resrank-slurm-apt.log)"
  fi
  [[ -z $(missing_cmds) ]] || skip "still missing after install: $(missing_cmds | xargs)"
fi

SNAKEMAKE=${SNAKEMAKE:-}
if [[ -z $SNAKEMAKE ]]; then
  if [[ -x $REPO/.venv/bin/snakemake ]]; then SNAKEMAKE=$REPO/.venv/bin/snakemake
  else SNAKEMAKE=$(command -v snakemake || true); fi
fi
if [[ $MODE != custom ]]; then
  [[ -n $SNAKEMAKE && -x $SNAKEMAKE ]] || fail "snakemake not found (make venv first)"
fi
# sbatch exports this environment to the jobs, which run `python -m snakemake` and the `resrank`
# CLI: the venv must come first on PATH (custom commands included)
if [[ -n $SNAKEMAKE && -x $SNAKEMAKE ]]; then
  PATH="$(dirname "$SNAKEMAKE"):$PATH"
  export PATH
fi
[[ $MODE == smoke && ! -f $REPO/config/smoke.yaml ]] && fail "--smoke: config/smoke.yaml does not exist"

# ---------------------------------------------------------------- one run at a time; clear leftovers
mkdir -p "$(dirname "$BASE")"
exec 9>"$BASE.lock"
flock -w 120 9 || fail "another run holds $BASE.lock"
# daemons and the workflow must not inherit the lock, or a leftover daemon would block every rerun
nolock() { "$@" 9>&-; }

stop_pidfile() { # stop a process this script started (pid file under $BASE, name checked), TERM then KILL
  local f=$1 name=$2 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
stop_all() {
  local f pid
  if [[ -f $BASE/run/slurmctld.pid ]] && command -v squeue >/dev/null; then
    # cancel whatever is still queued or running on this private cluster
    local ids
    ids=$(SLURM_CONF=$BASE/etc/slurm.conf timeout 10 squeue -h -t PD,CF,R,S -o %i 2>/dev/null || true)
    [[ -n $ids ]] && SLURM_CONF=$BASE/etc/slurm.conf timeout 10 scancel $ids 2>/dev/null || true
  fi
  # a workflow still running (interrupted run): TERM its process group, KILL it after 15 s
  pid=$(cat "$BASE/run/workflow.pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q '^timeout '; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 75); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$BASE/run/workflow.pid"
  for f in run/slurmd run/slurmctld run/slurmdbd mysql-run/mariadbd munge-socket/munged; do
    stop_pidfile "$BASE/$f.pid" "$(basename "$f")"
  done
  if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$BASE/etc/slurm.conf" ]]; then
    rm -f /etc/slurm/slurm.conf
  fi
}
stop_all   # leftovers of an earlier run that was killed before its trap ran
rm -rf "$BASE"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if ((rc == 0)) && [[ $KEEP != 1 ]]; then
    rm -rf "$BASE"
  elif [[ -d $BASE ]]; then
    log "kept $BASE (logs in $BASE/log)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BASE"/{etc,run,log,state,spool,munge,work}
chmod 0755 "$BASE" "$BASE/run"

show_logs() {
  local f
  for f in "$BASE"/log/*.log; do
    [[ -f $f ]] || continue
    echo "----- tail $f"; tail -n 25 "$f"
  done
}

free_port() { # first port >= $1 that nothing listens on
  local p=$1
  while ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || ss -Hltn "sport = :$((p + 1))" 2>/dev/null | grep -q .; do
    p=$((p + 2))
  done
  echo "$p"
}

# ---------------------------------------------------------------- munge
MUNGE_SOCK=$BASE/munge-socket/munge.socket
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
mungekey --create --keyfile="$BASE/munge/munge.key" --bits=1024
mkdir -p "$BASE/munge-socket"
chown "$MUNGE_USER" "$BASE/munge" "$BASE/munge/munge.key" "$BASE/munge-socket"
# munged wants a private key folder but a socket folder everybody may enter
chmod 0700 "$BASE/munge"; chmod 0400 "$BASE/munge/munge.key"; chmod 0755 "$BASE/munge-socket"
touch "$BASE/log/munged.log"
chown "$MUNGE_USER" "$BASE/log/munged.log"
munge_args=(--socket="$MUNGE_SOCK" --key-file="$BASE/munge/munge.key" --pid-file="$BASE/munge-socket/munged.pid"
  --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/munged.seed")
log "starting munged as $MUNGE_USER"
if [[ $MUNGE_USER == munge ]]; then
  nolock runuser -u munge -- munged "${munge_args[@]}" || { show_logs; fail "munged did not start"; }
else
  nolock munged --force "${munge_args[@]}" || { show_logs; fail "munged did not start"; }
fi
munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK" >/dev/null || { show_logs; fail "munge credential round trip failed"; }

# ---------------------------------------------------------------- slurm.conf
CTLD_PORT=$(free_port 16817)
SLURMD_PORT=$(free_port $((CTLD_PORT + 2)))
DBD_PORT=$(free_port $((SLURMD_PORT + 2)))
CPUS=$(nproc)
MEM_TOTAL=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# leave room for the OS and the daemons: 10 % but at least 512 MB
REAL_MEM=$((MEM_TOTAL - (MEM_TOTAL / 10 > 512 ? MEM_TOTAL / 10 : 512)))
((REAL_MEM >= 1024)) || skip "only ${MEM_TOTAL} MB of memory"

export SLURM_CONF=$BASE/etc/slurm.conf
# The jobstep plugin (snakemake-executor-plugin-slurm-jobstep 0.6.1) removes SLURM_CONF from the
# environment of the `srun` it runs inside each job, so srun must find the configuration at the
# compiled-in default path. Link it there for the duration of the run, never over a real one.
SYS_CONF=/etc/slurm/slurm.conf
if [[ -L $SYS_CONF && $(readlink "$SYS_CONF") == "$SLURM_CONF" ]]; then
  rm -f "$SYS_CONF"   # left by an earlier run that was killed
fi
[[ -e $SYS_CONF || -L $SYS_CONF ]] && skip "$SYS_CONF exists (a real Slurm set-up?); not replacing it"
mkdir -p "$(dirname "$SYS_CONF")"
ln -s "$SLURM_CONF" "$SYS_CONF"
if [[ $ACCOUNTING == slurmdbd ]]; then
  acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for accounting_storage/slurmdbd this names the munge socket used towards slurmdbd
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageEnforce=associations"
else
  acct_lines="AccountingStorageType=accounting_storage/none"
fi
cat >"$SLURM_CONF" <<EOF
# generated by tools/slurm_integration.sh: one node, private ports/munge socket, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# containers: no cgroup hierarchy to manage, so track processes by parent pid and bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# finished jobs stay visible to squeue for 15 minutes (Snakemake's squeue status polling needs >= 120 s)
MinJobAge=900
$acct_lines
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
PlugStackConfig=$BASE/etc/plugstack.conf
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
: >"$BASE/etc/plugstack.conf"
log "slurm.conf: node $NODE CPUs=$CPUS RealMemory=${REAL_MEM}MB, slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT, accounting=$ACCOUNTING"

# ---------------------------------------------------------------- optional slurmdbd + MariaDB
if [[ $ACCOUNTING == slurmdbd ]]; then
  DB_SOCK=$BASE/mysql-run/mariadb.sock
  mkdir -p "$BASE/mysql" "$BASE/mysql-run"
  chown mysql:mysql "$BASE/mysql" "$BASE/mysql-run"
  mariadb-install-db --no-defaults --user=mysql --datadir="$BASE/mysql" --auth-root-authentication-method=socket \
    >"$BASE/log/mariadb-install.log" 2>&1 || { show_logs; fail "mariadb-install-db failed"; }
  touch "$BASE/log/mariadbd.log"; chown mysql "$BASE/log/mariadbd.log"
  log "starting MariaDB (socket only) for slurmdbd"
  nolock mariadbd --no-defaults --user=mysql --datadir="$BASE/mysql" --socket="$DB_SOCK" --skip-networking \
    --pid-file="$BASE/mysql-run/mariadbd.pid" --log-error="$BASE/log/mariadbd.log" \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  for _ in $(seq 60); do mariadb --socket="$DB_SOCK" -e 'select 1' >/dev/null 2>&1 && break; sleep 1; done
  mariadb --socket="$DB_SOCK" -e 'select 1' >/dev/null 2>&1 || { show_logs; fail "MariaDB did not start"; }
  mariadb --socket="$DB_SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'resrank';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat >"$BASE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=0
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=resrank
EOF
  chmod 0600 "$BASE/etc/slurmdbd.conf"
  log "starting slurmdbd"
  # StorageHost=localhost: the MySQL client library connects through the socket in MYSQL_UNIX_PORT
  nolock env MYSQL_UNIX_PORT="$DB_SOCK" slurmdbd || { show_logs; fail "slurmdbd did not start"; }
  for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || { show_logs; fail "sacctmgr add cluster failed"; }
  sacctmgr -i add account resrank Description="resrank CI" Organization=resrank >/dev/null
  sacctmgr -i add user root Account=resrank DefaultAccount=resrank >/dev/null
fi

# ---------------------------------------------------------------- slurmctld + slurmd
log "starting slurmctld and slurmd"
nolock slurmctld -c -f "$SLURM_CONF" || { show_logs; fail "slurmctld did not start"; }
for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 1; done
scontrol ping | grep -q UP || { show_logs; fail "slurmctld does not answer 'scontrol ping'"; }
nolock slurmd -f "$SLURM_CONF" -N "$NODE" || { show_logs; fail "slurmd did not start"; }
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
  [[ $state == idle ]] && break
  sleep 1
done
if [[ $state != idle ]]; then
  sinfo -R || true; show_logs; fail "node $NODE is '$state', not idle, after 60 s"
fi
sinfo
# a trivial job proves scheduling and step launch before Snakemake is involved
probe=$(srun -N1 -n1 -t 1 --mem=100 hostname 2>&1) || { echo "$probe"; show_logs; fail "srun probe failed"; }
log "srun probe ran on: $probe"

# ---------------------------------------------------------------- the workflow
STATUS_ARGS=()
# without slurmdbd `sacct` cannot answer; Snakemake must poll with squeue (MinJobAge above keeps finished jobs)
[[ $ACCOUNTING == jobcomp ]] && STATUS_ARGS=(--slurm-status-command squeue)
POLL_ARGS=(--slurm-init-seconds-before-status-checks 10)

WORK=$BASE/work
case $MODE in
  selftest)
    cat >"$WORK/Snakefile" <<'EOF'
# throwaway workflow from tools/slurm_integration.sh: 2 parallel jobs -> 1 two-core job -> 1 job
SAMPLES = ["s1", "s2"]
localrules: all

rule all:
    input: "final.txt"

rule make:
    output: "make/{sample}.txt"
    resources: mem_mb=200, runtime=5
    shell: 'echo "$SLURM_JOB_ID make {wildcards.sample} $(hostname -s)" > {output}'

rule combine:
    input: expand("make/{sample}.txt", sample=SAMPLES)
    output: "combined.txt"
    threads: 2
    resources: mem_mb=300, runtime=5
    shell: 'cat {input} > {output}; echo "$SLURM_JOB_ID combine cpus=$SLURM_CPUS_PER_TASK" >> {output}'

rule final:
    input: "combined.txt"
    output: "final.txt"
    resources: mem_mb=200, runtime=5
    shell: 'cat {input} > {output}; echo "$SLURM_JOB_ID final" >> {output}'
EOF
    RUN_DIR=$WORK
    CMD=("$SNAKEMAKE" --profile "$REPO/profiles/slurm" --snakefile "$WORK/Snakefile" --directory "$WORK"
      "${STATUS_ARGS[@]}" "${POLL_ARGS[@]}" all)
    ;;
  smoke)
    RUN_DIR=$REPO
    # results go to the throwaway folder (removed afterwards unless RESRANK_SLURM_KEEP=1), so the
    # check neither reuses nor overwrites results/smoke; `all` comes first: --config takes a list
    CMD=("$SNAKEMAKE" all --profile "$REPO/profiles/slurm" --configfile "$REPO/config/smoke.yaml"
      --config "results_dir=$BASE/results" "${STATUS_ARGS[@]}" "${POLL_ARGS[@]}")
    ;;
  custom)
    RUN_DIR=$REPO
    ;;
esac

START=$(date +%Y-%m-%dT%H:%M:%S)
SMK_LOG=$BASE/log/workflow.log
log "running (in $RUN_DIR, timeout ${TIMEOUT}s): ${CMD[*]}"
set +e
{
  # The subshell becomes `setsid timeout CMD`: its own process group, so that the cleanup (or a
  # rerun after a killed run, through the pid file) can stop the workflow with all its children.
  (echo "$BASHPID" >"$BASE/run/workflow.pid"; cd "$RUN_DIR" && exec setsid timeout "$TIMEOUT" "${CMD[@]}") 2>&1 \
    | tee "$SMK_LOG"
  CMD_RC=${PIPESTATUS[0]}
} 9>&-
rm -f "$BASE/run/workflow.pid"
set -e

# ---------------------------------------------------------------- job records
echo
log "squeue --states=all (finished jobs are kept for MinJobAge=900 s):"
squeue --states=all -o '%.6i %.40j %.9P %.4C %.7m %.11T %.10M %R' || log "squeue failed (rc=$?)"
echo
FMT=JobID,JobName%40,Partition,AllocCPUS,State,ExitCode,Start,End,Elapsed,NodeList
if [[ $ACCOUNTING == slurmdbd ]]; then
  log "sacct -X --starttime $START (slurmdbd accounting):"
  sacct -X -a --starttime "$START" -o "$FMT,ReqMem,Account"
  ACCT=$(sacct -X -a -n -P --starttime "$START" -o JobIDRaw,JobName,State,ExitCode)
else
  log "sacct --completion (job-completion records written by slurmctld to $BASE/log/jobcomp.txt):"
  sacct --completion -o "$FMT"
  ACCT=$(sacct --completion -n -P -o JobID,JobName,State,ExitCode)
fi
echo

# ---------------------------------------------------------------- checks
errors=0
check() { if eval "$2"; then log "ok: $1"; else log "NOT OK: $1"; errors=$((errors + 1)); fi; }

RUN_UUID=$(sed -n 's/.*SLURM run ID: \([0-9a-f-]\{36\}\).*/\1/p' "$SMK_LOG" | tail -n 1)
mapfile -t SUBMITTED < <(sed -n "s/.*Job [0-9]* has been submitted with SLURM jobid \([0-9_]*\) .*/\1/p" "$SMK_LOG" | sort -n)
# Jobs Snakemake planned: the first "Job stats" table (later ones are echoed job logs); local jobs
# are the "localrule NAME:" blocks; executor jobs are the distinct Snakemake job ids submitted.
N_TOTAL=$(awk '/^Job stats:/ {f = 1} f && $1 == "total" {print $2; exit}' "$SMK_LOG")
N_TOTAL=${N_TOTAL:-0}
N_LOCAL=$(awk '/^localrule [A-Za-z_][A-Za-z0-9_]*:$/ {b = 1; next} b && /^ +jobid: / {print $2; b = 0}' "$SMK_LOG" | sort -u | wc -l)
N_REMOTE=$((N_TOTAL - N_LOCAL))
N_SUBMITTED_JOBS=$(sed -n 's/.*Job \([0-9]*\) has been submitted with SLURM jobid.*/\1/p' "$SMK_LOG" | sort -u | wc -l)
mapfile -t RECORDED < <(awk -F'|' -v n="$RUN_UUID" '$2 == n {print $1}' <<<"$ACCT" | sort -n)
mapfile -t COMPLETED < <(awk -F'|' -v n="$RUN_UUID" '$2 == n && $3 == "COMPLETED" && $4 == "0:0" {print $1}' <<<"$ACCT" | sort -n)
log "run ${RUN_UUID:-?}: $N_TOTAL Snakemake jobs planned, $N_LOCAL local; ${#SUBMITTED[@]} sbatch submissions for $N_SUBMITTED_JOBS jobs; ${#RECORDED[@]} Slurm records, ${#COMPLETED[@]} COMPLETED 0:0"

check "the workflow command exited with 0 (got $CMD_RC)" '((CMD_RC == 0))'
check "Snakemake reported a SLURM run ID" '[[ -n $RUN_UUID ]]'
check "at least one job went to Slurm" '((${#SUBMITTED[@]} > 0))'
check "every non-local Snakemake job was submitted with sbatch ($N_REMOTE == $N_SUBMITTED_JOBS)" '((N_REMOTE == N_SUBMITTED_JOBS))'
check "Slurm recorded exactly the submitted jobs" '[[ "${RECORDED[*]}" == "${SUBMITTED[*]}" ]]'
check "every submitted job COMPLETED with exit code 0:0" '[[ "${COMPLETED[*]}" == "${SUBMITTED[*]}" ]]'
check "Snakemake finished all steps" 'grep -q -E "([0-9]+) of \1 steps \(100%\) done" "$SMK_LOG"'
if [[ $MODE == selftest ]]; then
  # each rule wrote the $SLURM_JOB_ID it saw: the work really ran inside those Slurm jobs
  mapfile -t SEEN < <(awk '$1 ~ /^[0-9]+$/ {print $1}' "$WORK"/make/*.txt "$WORK/final.txt" | sort -nu)
  check "outputs were written inside the submitted Slurm jobs (${SEEN[*]})" '[[ "${SEEN[*]}" == "${SUBMITTED[*]}" ]]'
  check "the threads: 2 rule got 2 CPUs from Slurm" 'grep -q "combine cpus=2" "$WORK/final.txt"'
  check "4 jobs went to Slurm (2 x make, combine, final) and 'all' stayed local" '((${#SUBMITTED[@]} == 4 && N_LOCAL == 1))'
fi

((errors == 0)) || { show_logs; fail "$errors check(s) failed"; }
log "PASSED: ${#SUBMITTED[@]} Snakemake jobs ran as Slurm jobs and completed"
