"""End-to-end: the whole DAG on the smoke profile, then targeted re-runs and determinism."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"

pytestmark = pytest.mark.slow


def snakemake(*args: str, results: Path, config: Path = SMOKE, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake from the repository root with outputs under ``results``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "RESRANK_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RESRANK_DATA", None)  # the smoke profile is fully offline and independent of real data
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile", str(config),
           "--config", f"results_dir={results}", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts per rule from a dry run's 'Job stats' table."""
    jobs: dict[str, int] = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        jobs[match.group(1)] = int(match.group(2))
    jobs.pop("total", None)
    return jobs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    snakemake("all", results=results)
    return results / "smoke"


def test_all_builds_every_table_figure_and_report(smoke_run: Path) -> None:
    for name in ("main", "bm25_vs_published", "ablations", "pools", "efficiency", "bm25_throughput"):
        for ext in ("md", "csv", "tex"):
            assert (smoke_run / "tables" / f"{name}.{ext}").stat().st_size > 0
    for name in ("ndcg_per_dataset", "ablation_deltas", "loss_curves", "efficiency_scaling", "position_sensitivity"):
        assert (smoke_run / "figures" / f"{name}.png").stat().st_size > 1000
        assert (smoke_run / "figures" / f"{name}.pdf").exists()
    html = (smoke_run / "report.html").read_text()
    assert "ResRank reproduction report" in html and "<img" in html
    assert "BM25 first-stage throughput" in html  # the efficiency section shows the BM25 table
    throughput = pd.read_csv(smoke_run / "tables" / "bm25_throughput.csv")
    assert list(throughput.backend) == ["bm25s", "rank-bm25"] and set(throughput.dataset) == {"embedded"}
    assert throughput["ndcg@10"].nunique() == 1 and (throughput.qps > 0).all()
    notebook = json.loads((smoke_run / "report.ipynb").read_text())
    errors = [o for c in notebook["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


def test_metrics_cover_every_system(smoke_run: Path) -> None:
    metrics = pd.read_csv(smoke_run / "metrics.csv")
    assert list(metrics.columns) == ["system", "dataset", "metric", "value", "n_queries"]
    config = yaml.safe_load(SMOKE.read_text())
    expected = {"bm25", "encoder-untrained", "encoder-only", "dense", "rrf", "resrank@dense", "resrank@rrf",
                *config["variants"]}
    assert set(metrics.system) == expected
    ndcg = metrics[metrics.metric == "ndcg@10"]
    assert ndcg.value.between(0, 1).all()
    assert (ndcg.n_queries == ndcg.n_queries.iloc[0]).all()
    provenance = json.loads((smoke_run / "metrics.provenance.json").read_text())
    assert len(provenance["config_sha256"]) == 64 and provenance["versions"]["torch"]


def test_table_cell_regenerates_from_metric_file(smoke_run: Path) -> None:
    record = json.loads((smoke_run / "metrics" / "embedded" / "resrank.json").read_text())
    table = pd.read_csv(smoke_run / "tables" / "main.csv")
    row = table[table.system == "ResRank (ours)"].iloc[0]
    assert float(row["embedded"]) == pytest.approx(record["metrics"]["ndcg@10"], abs=5e-7)  # metrics.csv: 6 decimals
    ablations = pd.read_csv(smoke_run / "tables" / "ablations.csv")
    base = ablations[(ablations.system == "resrank")]["nDCG@10"].iloc[0]
    assert base == pytest.approx(record["metrics"]["ndcg@10"], abs=1e-9)  # read from the metrics JSON


def test_efficiency_accounting_in_ablation_table(smoke_run: Path) -> None:
    ablations = pd.read_csv(smoke_run / "tables" / "ablations.csv").set_index("system")
    assert ablations.loc["resrank", "generated tokens"] == 0
    assert ablations.loc["resrank", "forward passes"] == 1
    depth = yaml.safe_load(SMOKE.read_text())["reranker"]["depth"]
    assert ablations.loc["autoregressive", "generated tokens"] == depth  # one emitted passage per candidate


def test_ablation_target_is_up_to_date_then_reruns_only_its_variant(smoke_run: Path, tmp_path: Path) -> None:
    results = smoke_run.parent
    dry = snakemake("-n", "ablation_no_residual", results=results)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    config = yaml.safe_load(SMOKE.read_text())
    config["variants"]["no-residual"] = {"reranker": {"residual": False, "residual_scale": 0.5}}
    edited = tmp_path / "smoke-edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    dry = snakemake("-n", "ablation_no_residual", results=results, config=edited)
    jobs = planned_jobs(dry.stdout)
    assert jobs.get("train_stage") == 2, jobs
    assert "prepare_data" not in jobs and "first_stage" not in jobs
    # a different variant's target is untouched by that edit
    other = snakemake("-n", "ablation_single_stage", results=results, config=edited)
    assert "Nothing to be done" in other.stdout + other.stderr


def test_same_seed_same_results(smoke_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    snakemake(f"{again}/smoke/metrics.csv", results=again)
    for run in sorted((smoke_run / "runs").rglob("*.trec")):
        twin = again / "smoke" / run.relative_to(smoke_run)
        assert twin.read_bytes() == run.read_bytes(), f"{run.name} differs between identical runs"
    assert (again / "smoke" / "metrics.csv").read_text() == (smoke_run / "metrics.csv").read_text()
    shutil.rmtree(again)


def test_sigkilled_training_resumes_to_the_same_model(tmp_path: Path) -> None:
    """SIGKILL a training job mid-stage; the Snakemake re-run resumes from its last checkpoint."""
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    config = yaml.safe_load(SMOKE.read_text())
    config["train"]["stages"]["stage1"].update(steps=12, checkpoint_every=3)
    config["variants"] = {"resrank": {}}
    cfg_path = tmp_path / "kill.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    target = "models/resrank/stage1/DONE"

    reference = tmp_path / "reference"
    snakemake(f"{reference}/smoke/{target}", results=reference, config=cfg_path)

    killed = tmp_path / "killed"
    stage = killed / "smoke" / "models" / "resrank" / "stage1"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "RESRANK_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RESRANK_DATA", None)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile", str(cfg_path),
           "--config", f"results_dir={killed}", "--cores", "2", f"{killed}/smoke/{target}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(stage.glob("checkpoint-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(stage.glob("checkpoint-*")), "no checkpoint appeared before the job ended"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (stage / "DONE").exists(), "the job finished before it could be killed"

    snakemake("--unlock", results=killed, config=cfg_path)  # the killed run's lock, as a user would clear it
    snakemake("--rerun-incomplete", f"{killed}/smoke/{target}", results=killed, config=cfg_path)
    log = (killed / "smoke" / "logs" / "train" / "resrank" / "stage1.log").read_text()
    assert "resuming from" in log
    ref_rows = [json.loads(x) for x in (reference / "smoke" / target).parent.joinpath("train_log.jsonl")
                .read_text().splitlines()]
    got_rows = [json.loads(x) for x in (stage / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got_rows] == [r["step"] for r in ref_rows] == list(range(1, 13))
    for ref, got in zip(ref_rows, got_rows, strict=True):
        assert got["loss"] == pytest.approx(ref["loss"], abs=1e-6)
    ref_weights = load_file(str((reference / "smoke" / target).parent / "model.safetensors"))
    got_weights = load_file(str(stage / "model.safetensors"))
    assert ref_weights.keys() == got_weights.keys()
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(got_weights[name], tensor, rtol=0, atol=1e-6, msg=name)
