"""Distributed training on CPU (gloo): 2 processes == 1 process, rank-0-only writes, resume.

The equivalence tested is the trainer's contract: N processes with ``grad_accum a`` run
exactly the micro-batches of one process with ``grad_accum N*a`` (same lists, same loss
weights, same dropout seeds), so loss, gradient norm and weights agree up to float
summation order. Each 2-process run is this file started by torchrun (see ``_worker``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_train_trainer import make_cfg, read_log, toy_lists, weights

import resrank.train.trainer as trainer
from resrank import cli
from resrank.errors import ResRankError
from resrank.train.trainer import stage_fingerprint, train_stage

STAGE = {"steps": 4, "queries_per_step": 4, "checkpoint_every": 2, "lr": 1e-3}
KEYS = ("loss", "rank_loss", "retrieval_loss", "grad_norm", "lr")
TIMEOUT = 600


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESRANK_NO_PROGRESS", "1")


VARIANTS: dict[str, dict[str, Any]] = {
    "joint": {},
    "separate": {"reranker": "tiny-qwen3-h48", "mode": "separate"},  # two phases, decoder layers, mlp projector
}


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The references: one process, grad_accum 2 (= 2 processes x grad_accum 1), per variant."""
    os.environ["RESRANK_NO_PROGRESS"] = "1"
    out = {}
    for name, kwargs in VARIANTS.items():
        cfg = make_cfg(stage={**STAGE, "grad_accum": 2}, **kwargs)
        folder = tmp_path_factory.mktemp(f"single-{name}") / "s1"
        out[name] = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, folder)
    return out


def run_two(tmp: Path, name: str, spec: dict[str, Any], kill_at: int | None = None) -> tuple[int, Path, str]:
    """Train with ``torchrun --nproc_per_node 2`` on this file; returns (exit code, out dir, output)."""
    out = tmp / name / "s1"
    record = tmp / f"{name}-record"
    record.mkdir(parents=True, exist_ok=True)
    job = {"out": str(out), "watch": str(tmp / name), "record": str(record), "kill_at": kill_at, **spec}
    env = {**os.environ, "RESRANK_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, json.dumps(job)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=Path(__file__).parent)
    return proc.returncode, out, proc.stdout + proc.stderr


def records(tmp: Path, name: str) -> dict[int, dict[str, Any]]:
    return {r: json.loads((tmp / f"{name}-record" / f"rank{r}.json").read_text()) for r in (0, 1)}


def assert_same_trajectory(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["phase"] == y["phase"]
        for key in KEYS:
            if y[key] is None:  # no such loss in this phase
                assert x[key] is None, (x["step"], key)
            else:
                assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), (x["step"], key, x[key], y[key])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=1e-4, atol=1e-5), key


# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "strategy"), [("joint", "ddp"), ("joint", "fsdp"), ("separate", "ddp"), ("separate", "fsdp")]
)
def test_two_processes_match_one_process(variant: str, strategy: str, single: dict[str, Path], tmp_path: Path) -> None:
    kwargs = VARIANTS[variant]
    spec = {"stage": {**STAGE, "grad_accum": 1}, "cfg": {**kwargs, "distributed": strategy}}
    rc, out, output = run_two(tmp_path, strategy, spec)
    assert rc == 0, output[-4000:]

    two_log, one_log = read_log(out), read_log(single[variant])
    steps = 2 * STAGE["steps"] if variant == "separate" else STAGE["steps"]
    assert [r["step"] for r in two_log] == list(range(1, steps + 1))  # one line per step: only rank 0 logs
    assert_same_trajectory(two_log, one_log)
    assert two_log[0]["loss"] != two_log[-1]["loss"]  # it did train
    assert_same_weights(out, single[variant])
    done = json.loads((out / trainer.DONE_FILE).read_text())
    plain = make_cfg(stage={**STAGE, "grad_accum": 1}, **kwargs)  # distributed: none
    assert done["step"] == steps
    assert done["fingerprint"] == stage_fingerprint(plain, plain.train.stages[0], toy_lists(), None)

    rec = records(tmp_path, strategy)
    assert rec[0]["world_size"] == rec[1]["world_size"] == 2
    assert rec[0]["strategy"] == rec[1]["strategy"] == strategy
    assert rec[0]["steps"] == rec[1]["steps"] == list(range(1, steps + 1))
    assert rec[1]["writes"] == []  # rank 1 touched nothing under the output folder
    written = {Path(p).name for _, p in rec[0]["writes"]}
    assert {"checkpoint-0000002", trainer.WEIGHTS_FILE, trainer.DONE_FILE, trainer.LOG_FILE} <= written
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", trainer.DONE_FILE, trainer.WEIGHTS_FILE, trainer.STATE_FILE, trainer.LOG_FILE]
    )


@pytest.mark.slow
def test_two_process_fsdp_resume_continues_exactly(single: dict[str, Path], tmp_path: Path) -> None:
    spec = {"stage": {**STAGE, "grad_accum": 1}, "cfg": {"distributed": "fsdp"}}
    rc, out, output = run_two(tmp_path, "resume", spec, kill_at=4)
    assert rc != 0 and "killed at step 4" in output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-0000002", trainer.LOG_FILE]
    ckpt = out / "checkpoint-0000002"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors",
        "optimizer.pt",
        "rng_state.pt",
        "trainer_state.json",
    ]
    optim = torch.load(ckpt / "optimizer.pt", weights_only=False)  # gathered into the one-process format
    assert optim["state"] and all(isinstance(k, int) for k in optim["state"])
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]
    assert records(tmp_path, "resume")[1]["writes"] == []

    rc, out, output = run_two(tmp_path, "resume", spec)
    assert rc == 0, output[-4000:]
    rec = records(tmp_path, "resume")
    assert rec[0]["steps"] == rec[1]["steps"] == [3, 4]  # resumed from step 2 on both ranks
    assert rec[1]["writes"] == []
    assert_same_trajectory(read_log(out), read_log(single["joint"]))
    assert_same_weights(out, single["joint"])


def test_more_micro_batches_than_lists_is_a_clear_error(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"queries_per_step": 3, "grad_accum": 2})
    runtime = trainer._Runtime(torch.device("cpu"), rank=0, world_size=2, strategy="ddp")
    with pytest.raises(ResRankError, match=r"queries_per_step \(3\) must be >= grad_accum \(2\) x processes \(2\)"):
        trainer._train_stage(runtime, cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "x", None)
    assert not (tmp_path / "x").exists()


def test_deepspeed_without_the_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import fails even where it is installed
    cfg = make_cfg(distributed="deepspeed")
    with pytest.raises(ResRankError, match=r"needs the deepspeed package: pip install deepspeed; or use fsdp"):
        trainer._Runtime.detect(cfg)


def test_micro_batch_dropout_depends_on_micro_batch_not_on_history() -> None:
    drop = torch.nn.Dropout(0.5)
    x = torch.ones(64)
    with trainer._micro_batch_rng(11, 3, 1, torch.device("cpu")):
        first = drop(x)
    torch.rand(100)  # another process / order would have consumed the stream differently
    with trainer._micro_batch_rng(11, 3, 1, torch.device("cpu")):
        again = drop(x)
    with trainer._micro_batch_rng(11, 3, 2, torch.device("cpu")):
        other = drop(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    state = torch.get_rng_state()
    with trainer._micro_batch_rng(11, 4, 0, torch.device("cpu")):
        drop(x)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched


def test_cli_train_relaunches_itself_under_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_cfg(num_processes=2, distributed="ddp").raw))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    launched: list[list[str]] = []

    class Exec(Exception):
        pass

    def fake_execv(path: str, argv: list[str]) -> None:
        launched.append([path, *argv])
        raise Exec

    monkeypatch.setattr(os, "execv", fake_execv)
    base = ["train", "--config", str(config), "--stage", "s1", "--data-dir", "d", "--runs-dir", "r", "--out", "o"]
    with pytest.raises(Exec):
        cli.main([*base, "--init", "prev"])
    path, *argv = launched[0]
    assert path == argv[0] == sys.executable
    assert argv[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "resrank.cli"]
    rest = argv[8:]
    assert rest[0] == "train" and not any(a.startswith("--nproc") or a == "--processes" for a in rest)
    assert rest[rest.index("--init") + 1] == "prev" and rest[rest.index("--out") + 1] == "o"
    assert rest[rest.index("--config") + 1] == str(config)

    launched.clear()  # --processes 1 overrides the config: trains in this process (fails later: no data)
    assert cli.main([*base, "--processes", "1"]) == 2
    assert launched == []
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a torchrun worker: never launches again
    assert cli.main(base) == 2
    assert launched == []


# --------------------------------------------------------------------------- torchrun worker


def _worker(job: dict[str, Any]) -> None:
    """One rank: train the toy stage, recording the steps run and every file-system write under ``watch``.

    Writes are seen through Python's audit events (open for writing, mkdir, rename, remove);
    C++ writers (``torch.save``, safetensors) show up through the temporary files and
    folders they write into and the renames that publish them.
    """
    rank = int(os.environ["RANK"])
    watch = job["watch"]
    writes: list[tuple[str, str]] = []
    mutating = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate", "os.symlink"}

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and isinstance(args[0], (str, Path)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            paths = [args[0]] if writing else []
        elif event in mutating:
            paths = [a for a in args[:2] if isinstance(a, (str, Path))]
        else:
            return
        for p in paths:
            if os.path.abspath(os.fsdecode(p)).startswith(watch):
                writes.append((event, os.fsdecode(p)))

    sys.addaudithook(audit)
    steps: list[int] = []
    original = trainer._optimizer_step

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        step = args[5]
        if step == job["kill_at"]:
            raise RuntimeError(f"killed at step {step}")
        steps.append(step)
        return original(*args, **kwargs)

    trainer._optimizer_step = counted
    runtime: dict[str, Any] = {}
    detect = trainer._Runtime.detect

    def spy(cfg: Any) -> trainer._Runtime:
        rt = detect(cfg)
        runtime.update(world_size=rt.world_size, strategy=rt.strategy)
        return rt

    trainer._Runtime.detect = spy  # type: ignore[method-assign]
    try:
        cfg = make_cfg(stage=job["stage"], **job["cfg"])
        train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, Path(job["out"]))
    finally:
        result = {"writes": writes, "steps": steps, **runtime}
        Path(job["record"], f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
