"""End-to-end run of profiles/slurm on a throwaway one-node Slurm cluster (tools/slurm_integration.sh).

Opt-in: it installs Debian packages and starts munged/slurmctld/slurmd as root, so it runs only with
RESRANK_TEST_SLURM=1 (or through `make test-slurm`, which calls the script directly). The script exits
with 77 when the host cannot run it (no root, no apt-get, ...); that becomes a pytest skip with the
script's reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "slurm_integration.sh"
SKIP_RC = 77


def _skip_reason(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("SKIP:"):
            return line[len("SKIP:") :].strip()
    return "tools/slurm_integration.sh exited with 77 (skipped) without a reason"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_snakemake_jobs_run_as_slurm_jobs() -> None:
    if os.environ.get("RESRANK_TEST_SLURM") != "1":
        pytest.skip("set RESRANK_TEST_SLURM=1 or run make test-slurm; needs root and daemons")
    # the smoke workflow when config/smoke.yaml exists, else the script's own 3-stage workflow;
    # RESRANK_TEST_SLURM_MODE=selftest|smoke picks one explicitly
    mode = os.environ.get("RESRANK_TEST_SLURM_MODE") or (
        "smoke" if (REPO / "config" / "smoke.yaml").is_file() else "selftest"
    )
    if mode not in ("smoke", "selftest"):
        pytest.fail(f"RESRANK_TEST_SLURM_MODE={mode!r}: expected 'smoke' or 'selftest'")
    # The work folder stays the script's default (/tmp/resrank-slurm, or $RESRANK_SLURM_DIR): munged
    # refuses a socket below pytest's private 0700 tmp folders, and unix socket paths must stay short.
    proc = subprocess.run(
        ["bash", str(SCRIPT), f"--{mode}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode == SKIP_RC:
        pytest.skip(_skip_reason(proc.stdout))
    tail = "\n".join(proc.stdout.splitlines()[-80:])
    assert proc.returncode == 0, f"tools/slurm_integration.sh --{mode} failed (rc={proc.returncode}):\n{tail}"
    assert "PASSED:" in proc.stdout, tail
