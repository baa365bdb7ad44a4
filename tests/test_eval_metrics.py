"""resrank.eval.metrics reproduces `trec_eval -c -m ndcg_cut.10 -m map_cut.100 -m recall.100`."""

from __future__ import annotations

import math
import random
import struct
from pathlib import Path

import pytest
from conftest import require
from scipy.stats import ttest_rel

from resrank.data.types import Qrels, Run
from resrank.errors import ResRankError
from resrank.eval import (
    EvalResult,
    compare,
    evaluate,
    paired_p_value,
    read_metrics_json,
    trec_eval_order,
    write_metrics_json,
)
from resrank.io import read_json, read_trec_qrels, read_trec_run

# --- a small graded example, computed by hand -------------------------------------------

QRELS: Qrels = {
    "q1": {"d1": 3, "d2": 2, "d3": 0, "d4": 1, "d5": -1},
    "q2": {"x1": 1},  # judged but missing from the run -> 0 for every metric
    "q3": {"y1": 0, "y2": 0},  # judged, nothing relevant -> 0 for every metric
}
RUN: Run = {
    # ranking: d3 (grade 0), d1 (3), d5 (-1: gain 0), d4 (1), d9 (unjudged); d2 not retrieved
    "q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d4": 0.6, "d9": 0.5},
    "q3": {"y1": 2.0, "y2": 1.0},
    "q4": {"z1": 1.0},  # not in the qrels -> ignored
}

# nDCG@10 with linear gains and log2(rank + 1) discounts:
#   DCG  = 0/log2(2) + 3/log2(3) + 0/log2(4) + 1/log2(5) + 0/log2(6)
#   IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4)           (ideal: grades 3, 2, 1)
Q1_DCG = 3 / math.log2(3) + 1 / math.log2(5)
Q1_IDCG = 3 / 1 + 2 / math.log2(3) + 1 / 2
Q1_NDCG = Q1_DCG / Q1_IDCG  # = (1.892789 + 0.430677) / (3 + 1.261860 + 0.5) = 2.323466 / 4.761860 = 0.487932
# AP@100: relevant (grade >= 1) are d1, d2, d4 (R = 3); hits at ranks 2 and 4:
#   (1/2 + 2/4) / 3
Q1_AP = (1 / 2 + 2 / 4) / 3
# Recall@100: 2 of the 3 relevant documents retrieved
Q1_RECALL = 2 / 3


def test_hand_computed_graded_example() -> None:
    result = evaluate(RUN, QRELS)
    assert result.n_queries == 3
    assert result.per_query["ndcg@10"]["q1"] == pytest.approx(0.487932, abs=1e-6)
    assert result.per_query["ndcg@10"]["q1"] == pytest.approx(Q1_NDCG, abs=1e-12)
    assert result.per_query["map@100"]["q1"] == pytest.approx(Q1_AP, abs=1e-12)
    assert result.per_query["recall@100"]["q1"] == pytest.approx(Q1_RECALL, abs=1e-12)
    # -c: the mean divides by all 3 judged queries, q2 and q3 contributing 0
    assert result.summary["ndcg@10"] == pytest.approx(Q1_NDCG / 3, abs=1e-12)
    assert result.summary["map@100"] == pytest.approx(Q1_AP / 3, abs=1e-12)
    assert result.summary["recall@100"] == pytest.approx(Q1_RECALL / 3, abs=1e-12)


def test_linear_gains_not_burges() -> None:
    # Burges gains (2^rel - 1) would give 7/log2(3) + 1/log2(5) over 7 + 3/log2(3) + 1/2.
    burges = (7 / math.log2(3) + 1 / math.log2(5)) / (7 + 3 / math.log2(3) + 1 / 2)
    value = evaluate(RUN, QRELS, ["ndcg@10"]).per_query["ndcg@10"]["q1"]
    assert abs(value - burges) > 0.01
    assert value == pytest.approx(Q1_NDCG, abs=1e-12)


def test_missing_and_unjudged_queries() -> None:
    result = evaluate(RUN, QRELS)
    for metric in ("ndcg@10", "map@100", "recall@100"):
        assert set(result.per_query[metric]) == {"q1", "q2", "q3"}  # q4 ignored
        assert result.per_query[metric]["q2"] == 0.0  # missing from the run
        assert result.per_query[metric]["q3"] == 0.0  # no relevant document


def test_cutoff_applies() -> None:
    qrels: Qrels = {"q": {f"d{i:02d}": 1 for i in range(12)}}
    run: Run = {"q": {f"d{i:02d}": 100.0 - i for i in range(12)}}
    result = evaluate(run, qrels, ["ndcg@10", "map@100", "recall@100", "ndcg@5"])
    # 10 relevant in the top 10 out of an ideal of 10 relevant -> 1.0
    assert result.summary["ndcg@10"] == pytest.approx(1.0, abs=1e-12)
    assert result.summary["ndcg@5"] == pytest.approx(1.0, abs=1e-12)
    assert result.summary["map@100"] == pytest.approx(1.0, abs=1e-12)
    cut = evaluate({"q": {f"d{i:02d}": 100.0 - i for i in range(3)}}, qrels, ["recall@100", "map@100"])
    assert cut.summary["recall@100"] == pytest.approx(3 / 12, abs=1e-12)
    assert cut.summary["map@100"] == pytest.approx(3 / 12, abs=1e-12)  # precision 1 at ranks 1-3, / R=12


def test_ties_broken_by_docid_descending() -> None:
    # trec_eval's comp_sim_docno: score descending, then strcmp(ptr2, ptr1) -> docid descending
    run: Run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0, "z": 0.5}}
    assert trec_eval_order(run["q"]) == ["c", "b", "a", "z"]
    qrels: Qrels = {"q": {"a": 1}}
    # a lands at rank 3: DCG = 1/log2(4) = 0.5, IDCG = 1
    assert evaluate(run, qrels, ["ndcg@10"]).summary["ndcg@10"] == pytest.approx(0.5, abs=1e-12)
    # the order the dict was built in does not matter
    shuffled: Run = {"q": {"z": 0.5, "c": 1.0, "a": 1.0, "b": 1.0}}
    assert evaluate(shuffled, qrels, ["ndcg@10"]).summary["ndcg@10"] == pytest.approx(0.5, abs=1e-12)


def test_scores_compared_as_c_float() -> None:
    # trec_eval keeps scores as 32-bit floats: 1.0 and 1.0 + 1e-9 are a tie, broken by docid
    run: Run = {"q": {"a": 1.0 + 1e-9, "b": 1.0}}
    assert trec_eval_order(run["q"]) == ["b", "a"]
    assert evaluate(run, {"q": {"b": 1}}, ["ndcg@10"]).summary["ndcg@10"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("run", "qrels", "fragment"),
    [
        ({}, {"q": {"d": 1}}, "run is empty"),
        ({"q": {}}, {"q": {"d": 1}}, "run is empty"),
        ({"q": {"d": 1.0}}, {}, "qrels are empty"),
        ({"other": {"d": 1.0}}, {"q": {"d": 1}}, "share no query id"),
        ({"q": {"d": math.nan}}, {"q": {"d": 1}}, "non-finite"),
    ],
)
def test_bad_input_raises(run: Run, qrels: Qrels, fragment: str) -> None:
    with pytest.raises(ResRankError, match=fragment):
        evaluate(run, qrels)


@pytest.mark.parametrize("metric", ["ndcg_burges@10", "P@10", "ndcg@0", "ndcg@x"])
def test_unsupported_metric_raises(metric: str) -> None:
    with pytest.raises(ResRankError, match="metric"):
        evaluate(RUN, QRELS, [metric])


def test_metrics_json_round_trip(tmp_path: Path) -> None:
    result = evaluate(RUN, QRELS)
    path = tmp_path / "metrics" / "toy" / "bm25.json"
    write_metrics_json(path, result, system="bm25", dataset="toy", provenance={"git": "abc"})
    raw = read_json(path)
    assert raw["system"] == "bm25" and raw["dataset"] == "toy" and raw["n_queries"] == 3
    assert raw["metrics"]["ndcg@10"] == pytest.approx(Q1_NDCG / 3, abs=1e-12)
    record = read_metrics_json(path)
    assert (record.system, record.dataset, record.provenance) == ("bm25", "toy", {"git": "abc"})
    assert record.result.summary == result.summary
    assert record.result.per_query == result.per_query
    assert isinstance(record.result, EvalResult) and record.result.n_queries == 3
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temporary file


def test_read_metrics_json_rejects_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"system": "x", "dataset": "y", "metrics": {}}\n', encoding="utf-8")
    with pytest.raises(ResRankError, match="n_queries"):
        read_metrics_json(path)


# --- paired comparison ----------------------------------------------------------------


def _synthetic(n_queries: int, seed: int) -> tuple[Qrels, Run, Run]:
    """A baseline with random scores and a run that puts relevant documents first more often."""
    rng = random.Random(seed)
    qrels: Qrels = {}
    base: Run = {}
    better: Run = {}
    for q in range(n_queries):
        qid = f"q{q}"
        docs = [f"d{i:03d}" for i in range(30)]
        qrels[qid] = {d: rng.choice([0, 0, 0, 1, 2, 3]) for d in docs}
        qrels[qid][docs[0]] = 3  # at least one relevant document
        base[qid] = {d: rng.random() for d in docs}
        better[qid] = {d: rng.random() + 0.8 * qrels[qid][d] for d in docs}
    return qrels, base, better


def test_compare_identical_runs_p_one() -> None:
    qrels, base, _ = _synthetic(20, seed=1)
    out = compare({"bm25": base, "copy": {q: dict(d) for q, d in base.items()}}, qrels, baseline="bm25")
    assert out["copy"]["delta"] == 0.0
    assert out["copy"]["p_value"] == 1.0
    assert out["bm25"] == {"mean": out["copy"]["mean"], "delta": 0.0, "p_value": 1.0}


def test_compare_better_run_small_p_and_matches_scipy_and_ranx() -> None:
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import compare as ranx_compare

    qrels, base, better = _synthetic(25, seed=7)
    out = compare({"base": base, "better": better}, qrels, baseline="base")
    assert out["better"]["delta"] > 0.2
    assert out["better"]["p_value"] < 1e-4
    assert out["better"]["mean"] - out["base"]["mean"] == pytest.approx(out["better"]["delta"], abs=1e-15)

    # scipy on our per-query vectors
    qids = sorted(qrels)
    a = [evaluate(base, qrels, ["ndcg@10"]).per_query["ndcg@10"][q] for q in qids]
    b = [evaluate(better, qrels, ["ndcg@10"]).per_query["ndcg@10"][q] for q in qids]
    assert out["better"]["p_value"] == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-9)

    # ranx's own compare (stat_test="student"): scores are distinct and every query is judged
    # with a relevant document, so ranx's per-query values coincide with ours here
    report = ranx_compare(
        RanxQrels.from_dict(qrels),
        [RanxRun.from_dict(base, name="base"), RanxRun.from_dict(better, name="better")],
        metrics=["ndcg@10"],
        stat_test="student",
    )
    assert report.results["base"]["ndcg@10"] == pytest.approx(out["base"]["mean"], abs=1e-12)
    assert report.results["better"]["ndcg@10"] == pytest.approx(out["better"]["mean"], abs=1e-12)
    ranx_p = report.comparisons["base", "better"]["ndcg@10"]["p_value"]
    assert out["better"]["p_value"] == pytest.approx(ranx_p, rel=1e-9)


def test_paired_p_value_edge_cases() -> None:
    assert paired_p_value([0.2, 0.4], [0.2, 0.4]) == 1.0
    assert paired_p_value([0.0, 0.5, 1.0], [0.25, 0.75, 1.25]) == 0.0  # constant non-zero gain
    assert math.isnan(paired_p_value([0.1], [0.2]))
    assert paired_p_value([0.5, 0.5], [0.0, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ResRankError):
        compare({"a": RUN}, QRELS, baseline="missing")


# --- real data: published trec_eval figures ------------------------------------------


def _c_float(value: float) -> float:
    """The value a C ``float`` holds, as trec_eval stores run scores."""
    return struct.unpack("f", struct.pack("f", value))[0]


def reference_ndcg10(docs: dict[str, float], judged: dict[str, int]) -> float:
    """Independent pure-Python trec_eval ndcg_cut.10 for one query."""
    ranked = sorted(docs, key=lambda d: (_c_float(docs[d]), d), reverse=True)[:10]
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(rank + 1) for rank, d in enumerate(ranked, start=1))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


@pytest.mark.realdata
def test_dl19_bm25_ndcg_and_independent_implementation(data_root: Path) -> None:
    run_path, qrels_path = require(data_root, "trec-dl/dl19/bm25-top100.trec", "trec-dl/dl19/qrels.txt")
    run, qrels = read_trec_run(run_path), read_trec_qrels(qrels_path)
    result = evaluate(run, qrels)
    assert result.n_queries == 43
    assert round(result.summary["ndcg@10"], 4) == 0.5058
    for qid in qrels:
        expected = reference_ndcg10(run.get(qid, {}), qrels[qid])
        assert result.per_query["ndcg@10"][qid] == pytest.approx(expected, abs=1e-9), qid
    reference_mean = math.fsum(reference_ndcg10(run.get(q, {}), qrels[q]) for q in qrels) / len(qrels)
    assert result.summary["ndcg@10"] == pytest.approx(reference_mean, abs=1e-12)


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "expected"), [("trec-covid", 0.5947), ("trec-news", 0.3952)])
def test_beir_bm25_flat_ndcg(data_root: Path, name: str, expected: float) -> None:
    run_path, qrels_path = require(
        data_root,
        f"beir/bm25-runs/{name}.bm25-flat.top100.trec",
        f"beir/test-topics-qrels/qrels.beir-v1.0.0-{name}.test.txt",
    )
    run, qrels = read_trec_run(run_path), read_trec_qrels(qrels_path)
    result = evaluate(run, qrels)
    assert result.n_queries == len(qrels)
    assert round(result.summary["ndcg@10"], 4) == expected
    for qid in qrels:
        assert result.per_query["ndcg@10"][qid] == pytest.approx(
            reference_ndcg10(run.get(qid, {}), qrels[qid]), abs=1e-9
        ), qid
