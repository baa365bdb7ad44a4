"""Efficiency benchmark: exact token/pass accounting of every method, sliding windows,
output files, growth exponents, memory probe, and the prepared GPU script run on CPU.

Tiny random Qwen3 backbone throughout; no assertion depends on a timing."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resrank.bench import efficiency as eff
from resrank.bench.efficiency import (
    CSV_COLUMNS,
    ENCODING,
    METHODS,
    Cost,
    Row,
    accept_cache_keyword,
    build_systems,
    encode_passages,
    expected_cost,
    growth_exponents,
    make_workload,
    run_efficiency,
    sliding_windows,
    window_count,
    write_outputs,
)
from resrank.errors import ResRankError

REPO = Path(__file__).resolve().parents[1]
Q, P = 24, 8  # prompt tokens besides passages, tokens per passage (small, fast)
NS = (20, 50)


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return run_efficiency("tiny", NS, repeats=1, passage_tokens=P, device="cpu", dtype="float32", seed=0,
                          query_tokens=Q, warmup=0, threads=1, measure_memory=False)


def row(rows: list[Row], method: str, n: int) -> Row:
    (match,) = [r for r in rows if r.method == method and r.n_candidates == n]
    return match


# ------------------------------------------------------------------ accounting
@pytest.mark.parametrize("n", NS)
def test_resrank_one_step_processes_query_plus_n_plus_one_and_generates_nothing(rows: list[Row], n: int) -> None:
    r = row(rows, "resrank", n)
    assert (r.forward_passes, r.processed_tokens, r.generated_tokens) == (1, Q + n + 1, 0)


@pytest.mark.parametrize("n", NS)
def test_resrank_autoregressive_emits_n_passages_in_n_passes(rows: list[Row], n: int) -> None:
    r = row(rows, "resrank-autoregressive", n)
    # 1 prefill over the prompt + (n - 1) one-token decode steps; one passage emitted per step
    assert r.generated_tokens == n
    assert r.forward_passes == n
    assert r.processed_tokens == (Q + n + 1) + (n - 1)


@pytest.mark.parametrize("n", NS)
def test_fulltext_onestep_reads_every_passage_text_once(rows: list[Row], n: int) -> None:
    r = row(rows, "fulltext-onestep", n)
    assert (r.forward_passes, r.processed_tokens, r.generated_tokens) == (1, Q + n * (3 + P) + 1, 0)


@pytest.mark.parametrize(("n", "windows"), [(20, 1), (50, 4)])
def test_fulltext_generate_counts_follow_the_sliding_window_formula(rows: list[Row], n: int, windows: int) -> None:
    assert len(sliding_windows(n)) == window_count(n) == windows
    assert window_count(n) == (1 if n <= 20 else math.ceil((n - 20) / 10) + 1)
    r = row(rows, "fulltext-generate", n)
    per_window = 4 * 20  # every window of these lists holds 20 passages, 4 generated tokens each
    assert r.generated_tokens == windows * per_window
    assert r.forward_passes == windows * per_window  # prefill + 79 decode steps per window
    prompt = Q + 20 * (3 + P) + 1
    assert r.processed_tokens == windows * (prompt + per_window - 1)


@pytest.mark.parametrize("n", NS)
def test_offline_encoding_is_reported_separately(rows: list[Row], n: int) -> None:
    r = row(rows, ENCODING, n)
    assert (r.forward_passes, r.processed_tokens, r.generated_tokens) == (1, n * P, 0)


def test_every_row_matches_the_documented_cost(rows: list[Row]) -> None:
    assert {r.method for r in rows} == {*METHODS, ENCODING}
    for r in rows:
        cost = expected_cost(r.method, r.n_candidates, Q, P)
        assert Cost(r.forward_passes, r.processed_tokens, r.generated_tokens) == cost, r.method
        assert len(r.latencies_s) == 1 and r.median_latency_s > 0


# -------------------------------------------------------------- sliding window
def test_sliding_windows_match_rank_llm_layout() -> None:
    assert sliding_windows(10) == [(0, 10)]
    assert sliding_windows(20) == [(0, 20)]
    assert sliding_windows(50) == [(30, 50), (20, 40), (10, 30), (0, 20)]
    assert sliding_windows(55)[-1] == (0, 15)
    assert len(sliding_windows(100)) == 9
    for n in range(1, 301):
        windows = sliding_windows(n)
        assert len(windows) == window_count(n), n
        assert windows[0][1] == n and windows[-1][0] == 0
        assert all(0 < end - start <= 20 for start, end in windows)
        assert all(b[1] == a[1] - 10 for a, b in itertools.pairwise(windows))


# ------------------------------------------------------------------ the methods
@pytest.fixture(scope="module")
def systems() -> eff.Systems:
    return build_systems("tiny", torch.device("cpu"), torch.float32, seed=0, depth=50)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_a_permutation(systems: eff.Systems, method: str) -> None:
    wl = make_workload(systems, 23, Q, P, seed=5, device="cpu")
    with torch.inference_mode():
        encode_passages(systems, wl, Cost())
        order = eff.RUNNERS[method](systems, wl, Cost())
    assert sorted(order.tolist()) == list(range(23))


def test_resrank_prompt_has_query_tokens_plus_slots_plus_summary(systems: eff.Systems) -> None:
    wl = make_workload(systems, 7, Q, P, seed=1, device="cpu")
    assert systems.resrank.prompt_length(wl.query, 7) == Q + 7 + 1
    assert wl.prefix_ids.shape == (Q,)
    with pytest.raises(ResRankError, match="no room"):
        make_workload(systems, 7, 3, P, seed=1, device="cpu")


def test_resrank_scores_use_the_encoder_embeddings(systems: eff.Systems) -> None:
    wl = make_workload(systems, 6, Q, P, seed=2, device="cpu")
    with torch.inference_mode():
        emb = encode_passages(systems, wl, Cost())
        out = systems.resrank([wl.query], [emb])
    assert torch.allclose(emb.norm(dim=-1), torch.ones(6), atol=1e-5)
    assert out.scores.shape == (1, 6) and torch.isfinite(out.scores).all()


def test_kv_cache_decoding_equals_a_full_forward(systems: eff.Systems) -> None:
    """The full-text generator's cached step must see the whole prefix (no silent cache loss)."""
    bb = systems.backbone
    ids = torch.randint(eff.FIRST_TEXT_ID, 1000, (12,), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full = bb.hidden(input_ids=ids)[-1]
        cache = bb.new_cache()
        bb.hidden(input_ids=ids[:-1], cache=cache)
        step = bb.hidden(input_ids=ids[-1:], cache=cache)[-1]
        cold = bb.hidden(input_ids=ids[-1:])[-1]
    assert torch.allclose(step, full, atol=1e-5)
    assert not torch.allclose(cold, full, atol=1e-3)


def test_cache_keyword_shim_translates_for_older_transformers() -> None:
    class Old(torch.nn.Module):
        def forward(self, x: torch.Tensor, past_key_values: object = None) -> object:
            return past_key_values

    marker = object()
    assert accept_cache_keyword(Old())(torch.zeros(1), cache=marker) is marker

    class New(torch.nn.Module):
        def forward(self, x: torch.Tensor, cache: object = None) -> object:
            return cache

    model = New()
    assert accept_cache_keyword(model) is model and "forward" not in model.__dict__


# ---------------------------------------------------------------------- outputs
def test_outputs_have_exact_csv_columns_and_all_files(rows: list[Row], tmp_path: Path) -> None:
    paths = write_outputs(rows, tmp_path / "tables", tmp_path / "figures", machine={"hardware": {"cpu": "test"}},
                          settings={"backbone": "tiny"})
    with open(paths["csv"], encoding="utf-8", newline="") as handle:
        records = list(csv.reader(handle))
    assert records[0] == list(CSV_COLUMNS)
    assert records[0] == ["method", "n_candidates", "median_latency_s", "p90_latency_s", "forward_passes",
                          "processed_tokens", "generated_tokens", "peak_memory_mb"]
    assert {(r[0], int(r[1])) for r in records[1:]} == {(m, n) for m in METHODS for n in NS}
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert {r["method"] for r in data["rows"]} == set(METHODS)
    assert {r["method"] for r in data["offline_encoding"]} == {ENCODING}
    assert set(data["growth_exponents"]) == set(METHODS)
    assert data["machine"] == {"hardware": {"cpu": "test"}} and data["settings"] == {"backbone": "tiny"}
    md = paths["md"].read_text(encoding="utf-8")
    assert "Growth exponents" in md and "| fulltext-generate | 50 |" in md and "Offline passage encoding" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    assert paths["png"].parent == tmp_path / "figures"


def test_growth_exponents_recover_a_power_law() -> None:
    fake = [Row("m", n, 0.003 * n**1.5, 0.0, 1, 1, 0, 0.0) for n in (10, 20, 50, 100)]
    fake += [Row("flat", n, 0.25, 0.0, 1, 1, 0, 0.0) for n in (20, 100)]
    exps = growth_exponents(fake)
    assert exps["m"]["overall"] == pytest.approx(1.5)
    assert exps["m"]["20-100"] == pytest.approx(1.5)
    assert exps["flat"]["overall"] == pytest.approx(0.0, abs=1e-12)


def test_percentile_and_acceptance_summary() -> None:
    assert eff._percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    fake = [Row("resrank", n, 0.01, 0.0, 1, 32 + n + 1, 0, 0.0) for n in (20, 100)]
    fake += [Row("fulltext-generate", n, 0.2, 0.0, 1, 1, 1, 0.0) for n in (20, 100)]
    fake += [Row("resrank-autoregressive", n, 0.02, 0.0, 1, 1, 1, 0.0) for n in (20, 100)]
    checks = eff.acceptance(fake)
    assert checks["speedup_vs_fulltext-generate"]["met"] is True
    assert checks["speedup_vs_resrank-autoregressive"]["met"] is False
    assert checks["resrank_tokens"]["met"] is True
    assert checks["resrank_exponent_20_100"]["value"] == pytest.approx(0.0, abs=1e-12)


def test_cpu_peak_memory_sees_a_large_allocation() -> None:
    def allocate() -> None:
        block = torch.ones(16 * 2**20)  # 64 MiB, every page touched
        time.sleep(0.05)
        del block

    peak = eff._peak_memory_mb(allocate, torch.device("cpu"))
    assert 56 <= peak <= 256


def test_bad_requests_fail_clearly() -> None:
    with pytest.raises(ResRankError, match="unknown efficiency backbone"):
        eff.backbone_config("huge")
    with pytest.raises(ResRankError, match="unknown efficiency method"):
        run_efficiency("tiny", [5], 1, methods=["rankgpt"])
    with pytest.raises(ResRankError, match="positive"):
        run_efficiency("tiny", [0], 1)
    if not torch.cuda.is_available():
        with pytest.raises(ResRankError, match="CUDA is not available"):
            eff.resolve_device("cuda")


def test_cli_reports_bad_input_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("efficiency_cli", REPO / "benchmarks" / "efficiency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--backbone", "tiny", "--n", "0", "--out-dir", "/nonexistent-never-written"]) == 2
    assert "error:" in capsys.readouterr().err


# ------------------------------------------------------------ prepared GPU script
@pytest.mark.slow
def test_gpu_script_runs_on_cpu_at_tiny_size(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_efficiency.py"), "--backbone", "tiny", "--device", "cpu",
         "--n", "20", "--repeats", "1", "--passage-tokens", "8", "--threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("efficiency.csv", "efficiency.md", "efficiency.json", "efficiency.png", "efficiency.pdf"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "efficiency.csv", encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["method"] for r in records] == list(METHODS)
    by = {r["method"]: r for r in records}
    assert int(by["resrank"]["processed_tokens"]) == 32 + 20 + 1
    assert int(by["resrank-autoregressive"]["generated_tokens"]) == 20
    data = json.loads((tmp_path / "efficiency.json").read_text(encoding="utf-8"))
    assert data["rows"][0]["device"] == "cpu" and data["rows"][0]["backbone"] == "tiny"
    assert data["settings"]["n"] == [20]
