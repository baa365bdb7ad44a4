"""BM25 throughput (the efficiency report's first-stage table): one row per backend with
equal rankings, the `resrank bench bm25` table files, and the benchmark script over it.

A hand-built eight-passage collection; no assertion depends on a timing's size."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from resrank.bench.bm25_throughput import COLUMNS, agreement, measure_bm25_throughput, top_hits
from resrank.cli import main as resrank_main
from resrank.config import RetrievalConfig
from resrank.data.prepared import write_prepared
from resrank.data.types import Dataset, Passage, Query
from resrank.errors import ResRankError
from resrank.eval.metrics import evaluate
from resrank.retrieval.bm25 import BACKENDS, BM25Index

REPO = Path(__file__).resolve().parents[1]
CFG = RetrievalConfig(backend="bm25s", k1=0.9, b=0.4, depth=5, remove_query_id_hits=True)

PASSAGES = {
    "d1": ("Volcanoes", "A volcano erupts lava and ash when magma rises through the crust."),
    "d2": ("Glaciers", "Glaciers carve valleys as the ice slowly flows downhill."),
    "d3": ("Photosynthesis", "Plants turn sunlight, water and carbon dioxide into sugar and oxygen."),
    "d4": ("Tides", "The moon's gravity pulls the oceans and causes the tides."),
    "d5": ("Earthquakes", "Earthquakes happen when tectonic plates slip along a fault."),
    "d6": ("Rainbows", "Sunlight refracted by raindrops splits into a rainbow of colours."),
    "d7": ("Magma chambers", "Magma collects in chambers below a volcano before an eruption."),
    "d8": ("Coral reefs", "Coral reefs grow in warm shallow oceans and shelter many fish."),
}
QUERIES = {
    "q1": "why does a volcano erupt magma",
    "q2": "what causes ocean tides",
    "q3": "how do plants use sunlight",
    "q4": "tectonic plates fault earthquakes",
}
QRELS = {"q1": {"d1": 2, "d7": 1}, "q2": {"d4": 1}, "q3": {"d3": 1}, "q4": {"d5": 1}}


def tiny_dataset(name: str = "tiny") -> Dataset:
    return Dataset(
        name=name,
        queries=[Query(qid, text) for qid, text in QUERIES.items()],
        qrels={q: dict(d) for q, d in QRELS.items()},
        corpus={docid: Passage(docid, text, title) for docid, (title, text) in PASSAGES.items()},
    )


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return measure_bm25_throughput([tiny_dataset()], CFG, repeats=2)


# ------------------------------------------------------------------ the library
def test_one_row_per_backend_with_the_dataset_sizes(rows: list[dict[str, Any]]) -> None:
    assert [r["backend"] for r in rows] == list(BACKENDS) == ["bm25s", "rank-bm25"]
    for row in rows:
        assert set(COLUMNS) <= set(row)
        assert row["dataset"] == "tiny"
        assert row["documents"] == len(PASSAGES) == 8
        assert row["queries"] == len(QUERIES) == 4
        assert row["depth"] == CFG.depth
        assert row["qps"] > 0 and row["search_s"] > 0 and row["index_s"] > 0
        assert row["qps"] == pytest.approx(4 / row["search_s"], rel=1e-2)
        assert len(row["search_runs_s"]) == 2 and row["search_s"] == min(row["search_runs_s"])
        assert row["analysis_s"] > 0
    assert rows[0]["analysis_s"] == rows[1]["analysis_s"]  # measured once, shared by both backends


def test_both_backends_rank_alike_and_ndcg_is_the_real_figure(rows: list[dict[str, Any]]) -> None:
    fast, slow = rows
    assert fast["ndcg@10"] is not None and fast["ndcg@10"] == slow["ndcg@10"]
    runs = {b: BM25Index.build(list(tiny_dataset().corpus.values()), CFG, backend=b).search(tiny_dataset().queries)
            for b in BACKENDS}
    assert top_hits(runs["bm25s"]) == top_hits(runs["rank-bm25"])
    # hand check: each query's passages sharing its terms, the closest first
    assert top_hits(runs["bm25s"]) == {"q1": ["d7", "d1"], "q2": ["d4", "d8"], "q3": ["d3", "d6"], "q4": ["d5"]}
    expected = evaluate(runs["rank-bm25"], QRELS, ["ndcg@10"]).summary["ndcg@10"]
    assert fast["ndcg@10"] == pytest.approx(expected, abs=1e-12)
    assert fast["top10_agree"] == 1.0 and slow["top10_agree"] is None  # rank-bm25 is the reference
    assert slow["qps_ratio"] == 1.0 and slow["index_speedup"] == 1.0
    assert fast["qps_ratio"] == pytest.approx(fast["qps"] / slow["qps"], abs=0.01)
    assert fast["index_speedup"] == pytest.approx(slow["index_s"] / fast["index_s"], abs=0.01)


def test_top_hits_and_agreement() -> None:
    a = {"q1": {"x": 3.0, "y": 2.0, "z": 1.0}, "q2": {"u": 1.0, "v": 1.0}}
    assert top_hits(a, 2) == {"q1": ["x", "y"], "q2": ["u", "v"]}  # ties broken by docid
    b = {"q1": {"x": 3.0, "z": 2.0, "y": 1.0}, "q2": {"u": 5.0, "v": 4.0}}
    assert agreement(b, a, k=1) == 1.0
    assert agreement(b, a, k=2) == 0.5
    assert agreement({}, a) == 0.0


def test_datasets_without_corpus_and_oversized_rank_bm25_are_skipped_with_a_reason() -> None:
    no_corpus = Dataset(name="cands", queries=[Query("q1", "x")], qrels={"q1": {"d1": 1}})
    skipped: dict[str, str] = {}
    rows = measure_bm25_throughput([no_corpus, tiny_dataset()], CFG, repeats=1, rank_bm25_max_documents=5,
                                   skipped=skipped)
    assert [(r["dataset"], r["backend"]) for r in rows] == [("tiny", "bm25s")]
    assert rows[0]["qps_ratio"] is None and rows[0]["top10_agree"] is None
    assert "no corpus" in skipped["cands"] and "8 documents > 5" in skipped["tiny/rank-bm25"]


def test_bad_settings_fail_clearly() -> None:
    with pytest.raises(ResRankError, match="unknown BM25 backend"):
        measure_bm25_throughput([tiny_dataset()], CFG, backends=["lucene"])
    with pytest.raises(ResRankError, match="repeats must be >= 1"):
        measure_bm25_throughput([tiny_dataset()], CFG, repeats=0)


# ------------------------------------------------------------------------ the CLI
def profile(tmp_path: Path) -> Path:
    stage = {"datasets": ["embedded-train"], "steps": 1, "lr": 1e-3, "queries_per_step": 2, "list_size": 4,
             "checkpoint_every": 1}
    config = {"profile": "bm25bench", "retrieval": {"k1": 1.2, "b": 0.75, "depth": 4},
              "efficiency": {"repeats": 2}, "train": {"stage_order": ["s1"], "stages": {"s1": stage}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_cli_writes_the_table_files_json_and_provenance(tmp_path: Path) -> None:
    data = tmp_path / "data" / "tiny"
    write_prepared(tiny_dataset(), data)
    out = tmp_path / "tables"
    assert resrank_main(["bench", "bm25", "--config", str(profile(tmp_path)), "--data", str(data),
                         "--out-dir", str(out)]) == 0
    with open(out / "bm25_throughput.csv", encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert list(records[0]) == list(COLUMNS)
    assert [(r["dataset"], r["backend"], r["documents"], r["queries"]) for r in records] == [
        ("tiny", "bm25s", "8", "4"), ("tiny", "rank-bm25", "8", "4")]
    assert records[0]["ndcg@10"] == records[1]["ndcg@10"] and records[0]["top10_agree"] == "1.0"
    assert all(float(r["qps"]) > 0 for r in records)
    md = (out / "bm25_throughput.md").read_text(encoding="utf-8")
    assert "BM25 first-stage throughput" in md and "| tiny | bm25s | 8 | 4 |" in md and "config sha256" in md
    assert "Depth 4, k1 1.2, b 0.75" in md
    assert "\\begin{tabular}" in (out / "bm25_throughput.tex").read_text(encoding="utf-8")
    report = json.loads((out / "bm25_throughput.json").read_text(encoding="utf-8"))
    assert report["settings"]["repeats"] == 2  # from the profile's efficiency.repeats
    assert report["settings"]["k1"] == 1.2 and report["settings"]["depth"] == 4
    assert [len(r["search_runs_s"]) for r in report["rows"]] == [2, 2]
    assert set(report["collections"]["tiny"]["backends"]) == set(BACKENDS)
    prov = json.loads((out / "bm25_throughput.provenance.json").read_text(encoding="utf-8"))
    assert prov["config_sha256"] and "tiny/corpus.jsonl" in prov["data_sha256"]


def test_cli_without_datasets_writes_an_empty_table_saying_why(tmp_path: Path) -> None:
    out = tmp_path / "tables"
    assert resrank_main(["bench", "bm25", "--config", str(profile(tmp_path)), "--data", "--out-dir", str(out),
                         "--repeats", "1"]) == 0
    assert (out / "bm25_throughput.csv").read_text(encoding="utf-8").strip() == ",".join(COLUMNS)
    assert "No dataset with a corpus" in (out / "bm25_throughput.md").read_text(encoding="utf-8")
    assert json.loads((out / "bm25_throughput.json").read_text(encoding="utf-8"))["rows"] == []


def test_cli_refuses_bad_repeats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = resrank_main(["bench", "bm25", "--config", str(profile(tmp_path)), "--out-dir", str(tmp_path),
                         "--repeats", "0"])
    assert code == 2 and "--repeats must be >= 1" in capsys.readouterr().err


# ------------------------------------------------------------- the benchmark script
def test_benchmark_script_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bm25_throughput_cli", REPO / "benchmarks" / "bm25_throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "tiny"
    write_prepared(tiny_dataset(), data)
    target = tmp_path / "out.json"
    code = module.main(["--collections", "scifact", "--data-root", str(tmp_path / "none"), "--data", str(data),
                        "--depth", "3", "--repeats", "1", "--json", str(target)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "scifact: skipped" in printed and "tiny: 8 docs, 4 queries, depth 3" in printed
    assert "bm25s / rank-bm25:" in printed and "identical top-10: 100% of queries" in printed
    report = json.loads(target.read_text(encoding="utf-8"))
    entry = report["collections"]["tiny"]
    assert set(entry["backends"]) == set(BACKENDS) and entry["qps_ratio_bm25s_over_rank_bm25"] > 0
    assert report["settings"]["depth"] == 3 and report["environment"]["bm25s_backend"] == "numpy"
