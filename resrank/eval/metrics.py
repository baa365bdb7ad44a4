"""trec_eval-exact evaluation on top of ranx's metric kernels.

The paper's figures (and every Pyserini / rank_llm reference row) come from
``trec_eval -c -m ndcg_cut.10 -m map_cut.100 -m recall.100``. ranx computes the same
per-query formulas (linear "Järvelin" gains for ``ndcg``, AP divided by the number of
relevant documents, recall over all relevant documents), but differs from trec_eval in the
parts around them, which this module takes over:

* **ranking**: trec_eval stores each score as a C ``float`` (32 bit) and sorts by that
  score descending, ties broken by docid in *descending* ``strcmp`` order
  (``comp_sim_docno`` in ``form_res_rels.c``). ranx sorts float64 scores with an
  unstable argsort, so ties land in arbitrary order. We order each query the trec_eval
  way and hand ranx strictly decreasing rank-based scores.
* **document ids**: ranx hashes docids to float64 (53-bit mantissa), so two ids can
  collide; we give ranx small per-query integer ids instead.
* **averaging** (``-c``): the mean runs over *every* query in the qrels; a judged query
  missing from the run scores 0, a run query absent from the qrels is ignored. ranx's
  ``evaluate`` refuses mismatched query sets (or needs ``make_comparable``) and averages
  over what it was given, so we compute per-query values and average ourselves.
* **no relevant document**: a judged query whose grades are all <= 0 counts with value 0
  (trec_eval's result); ranx would also give 0 but only if the query reaches it, so we set
  it explicitly. Negative grades are non-relevant with gain 0, as in trec_eval.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba.typed import List as TypedList
from ranx.metrics import average_precision, ndcg, recall
from scipy.stats import ttest_rel

from resrank.data.types import Qrels, Run
from resrank.errors import ResRankError
from resrank.io import read_json, write_json

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "map@100", "recall@100")
"""The paper's table: trec_eval ndcg_cut.10, map_cut.100, recall.100."""

PROTOCOL = "trec_eval -c (all judged queries; missing query = 0; ties by docid descending; float32 scores)"

_METRIC_RE = re.compile(r"^(ndcg|map|recall)(?:@([0-9]+))?$")
_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "ndcg": ndcg,  # Järvelin gains (rel / log2(rank + 1)) == trec_eval ndcg_cut; not ndcg_burges
    "map": average_precision,
    "recall": recall,
}


@dataclass
class EvalResult:
    """Mean and per-query values of each metric over all judged queries (trec_eval ``-c``)."""

    summary: dict[str, float]
    per_query: dict[str, dict[str, float]]  # metric -> qid -> value
    n_queries: int
    metrics: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_queries": self.n_queries,
            "metrics": dict(self.summary),
            "per_query": {m: dict(values) for m, values in self.per_query.items()},
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "metrics JSON") -> EvalResult:
        """Rebuild from :meth:`to_json` output, naming ``source`` when a key is missing."""
        for key in ("n_queries", "metrics", "per_query"):
            if key not in obj:
                raise ResRankError(f"{source}: missing key {key!r}; regenerate it with `resrank evaluate`")
        summary = {str(m): float(v) for m, v in obj["metrics"].items()}
        per_query = {str(m): {str(q): float(v) for q, v in vals.items()} for m, vals in obj["per_query"].items()}
        return cls(summary=summary, per_query=per_query, n_queries=int(obj["n_queries"]), metrics=list(summary))


@dataclass
class MetricsRecord:
    """One metrics file: which system on which dataset, its result and provenance."""

    system: str
    dataset: str
    result: EvalResult
    provenance: dict[str, Any] = field(default_factory=dict)


def parse_metric(name: str) -> tuple[str, int]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``; cutoff 0 means the whole ranking."""
    match = _METRIC_RE.match(name)
    if not match:
        raise ResRankError(
            f"unsupported metric {name!r}: use ndcg@k, map@k or recall@k (trec_eval ndcg_cut.k, map_cut.k, recall.k)"
        )
    kind, cutoff = match.group(1), match.group(2)
    k = int(cutoff) if cutoff is not None else 0
    if cutoff is not None and k <= 0:
        raise ResRankError(f"metric {name!r}: the cutoff must be a positive integer")
    return kind, k


def trec_eval_order(docs: Mapping[str, float]) -> list[str]:
    """Docids in trec_eval's order: float32 score descending, ties by docid descending."""
    ids = list(docs)
    values = np.asarray([docs[d] for d in ids], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = ids[int(np.flatnonzero(~np.isfinite(values))[0])]
        raise ResRankError(f"document {bad!r} has a non-finite score; fix the scorer before evaluating")
    with np.errstate(over="ignore"):  # |score| > 3.4e38 becomes +-inf, as a C float would
        as_float32 = values.astype(np.float32).tolist()
    return [docid for _, docid in sorted(zip(as_float32, ids, strict=True), reverse=True)]


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS) -> EvalResult:
    """Evaluate ``run`` against ``qrels`` exactly as ``trec_eval -c`` does (see module docstring)."""
    if not qrels:
        raise ResRankError("cannot evaluate: the qrels are empty (no judged query); check the qrels file")
    if not run or not any(run.values()):
        raise ResRankError("cannot evaluate: the run is empty (no ranked document); check the run file")
    if isinstance(metrics, str):
        metrics = [metrics]
    parsed = [(m, *parse_metric(m)) for m in metrics]
    if not parsed:
        raise ResRankError("cannot evaluate: no metric requested")
    qids = sorted(qrels)
    if not any(run.get(q) for q in qids):
        raise ResRankError(
            f"cannot evaluate: the run and the qrels share no query id (run e.g. {next(iter(run))!r}, "
            f"qrels e.g. {qids[0]!r}); check that both files belong to the same topic set"
        )

    # Queries ranx sees: retrieved something and have at least one relevant document.
    # All other judged queries score 0 by trec_eval's definition.
    scored: list[str] = []
    qrels_arrays: list[np.ndarray] = []
    run_arrays: list[np.ndarray] = []
    for qid in qids:
        docs = run.get(qid)
        relevant = {d: g for d, g in qrels[qid].items() if g > 0}
        if not docs or not relevant:
            continue
        order = trec_eval_order(docs)
        local = {docid: float(i) for i, docid in enumerate(order)}
        for docid in relevant:
            local.setdefault(docid, float(len(local)))
        n = len(order)
        run_arrays.append(np.array([[local[d], float(n - i)] for i, d in enumerate(order)], dtype=np.float64))
        # ranx's ideal DCG reads the qrels rows in order, so they must be sorted by grade.
        ranked_rel = sorted(relevant.items(), key=lambda item: (-item[1], item[0]))
        qrels_arrays.append(np.array([[local[d], float(g)] for d, g in ranked_rel], dtype=np.float64))
        scored.append(qid)

    per_query: dict[str, dict[str, float]] = {}
    summary: dict[str, float] = {}
    typed_qrels = TypedList(qrels_arrays) if scored else None
    typed_run = TypedList(run_arrays) if scored else None
    for name, kind, k in parsed:
        values = dict.fromkeys(qids, 0.0)
        if scored:
            scores = _KERNELS[kind](typed_qrels, typed_run, k=k, rel_lvl=1)
            values.update({qid: float(v) for qid, v in zip(scored, scores, strict=True)})
        per_query[name] = values
        summary[name] = math.fsum(values.values()) / len(qids)
    return EvalResult(summary=summary, per_query=per_query, n_queries=len(qids), metrics=[m for m, _, _ in parsed])


def paired_p_value(baseline: Sequence[float], other: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (scipy ``ttest_rel``, as ranx ``stat_test="student"``).

    Defined where the t statistic is not: 1.0 when every difference is zero (identical
    systems), 0.0 when every difference is the same non-zero value, nan with < 2 queries.
    """
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ResRankError(f"paired test needs equal-length vectors, got {a.shape} and {b.shape}")
    diff = b - a
    if diff.size and np.all(diff == 0.0):
        return 1.0
    if diff.size < 2:
        return math.nan
    if np.all(diff == diff[0]):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant differences: scipy still answers
        return float(ttest_rel(a, b, alternative="two-sided").pvalue)


def compare(
    runs: Mapping[str, Run], qrels: Qrels, baseline: str, metric: str = "ndcg@10"
) -> dict[str, dict[str, float]]:
    """Mean, difference to ``baseline`` and paired t-test p-value for each run, over all judged queries."""
    if baseline not in runs:
        raise ResRankError(f"baseline {baseline!r} is not among the runs {sorted(runs)}")
    parse_metric(metric)
    results = {name: evaluate(run, qrels, [metric]) for name, run in runs.items()}
    qids = sorted(qrels)
    base_vec = [results[baseline].per_query[metric][q] for q in qids]
    base_mean = results[baseline].summary[metric]
    out: dict[str, dict[str, float]] = {}
    for name, result in results.items():
        vec = [result.per_query[metric][q] for q in qids]
        mean = result.summary[metric]
        out[name] = {"mean": mean, "delta": mean - base_mean, "p_value": paired_p_value(base_vec, vec)}
    return out


def write_metrics_json(
    path: str | Path,
    result: EvalResult,
    system: str,
    dataset: str,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write ``results/<profile>/metrics/<dataset>/<system>.json`` atomically."""
    obj = {
        "system": system,
        "dataset": dataset,
        "protocol": PROTOCOL,
        **result.to_json(),
        "provenance": dict(provenance or {}),
    }
    write_json(path, obj)


def read_metrics_json(path: str | Path) -> MetricsRecord:
    """Read a file written by :func:`write_metrics_json`, naming the file on a bad record."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise ResRankError(f"{path}: expected a JSON object of metrics; regenerate it with `resrank evaluate`")
    for key in ("system", "dataset"):
        if key not in obj:
            raise ResRankError(f"{path}: missing key {key!r}; regenerate it with `resrank evaluate`")
    try:
        result = EvalResult.from_json(obj, source=str(path))
    except (AttributeError, TypeError, ValueError) as err:
        raise ResRankError(f"{path}: malformed metrics record ({err}); regenerate it with `resrank evaluate`") from None
    provenance = obj.get("provenance") or {}
    return MetricsRecord(system=str(obj["system"]), dataset=str(obj["dataset"]), result=result, provenance=provenance)
