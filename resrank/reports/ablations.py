"""Ablation and candidate-pool tables: each variant against full ResRank, per dataset.

Significance is a paired two-sided t-test over per-query nDCG@10 (all judged queries),
read from the metric files; efficiency columns come from the rerank stats files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resrank.config import read_config_file, validate
from resrank.eval.metrics import paired_p_value, read_metrics_json
from resrank.io import read_json
from resrank.reports.format import write_table
from resrank.workflow import MAIN_VARIANT, make_plan

METRIC = "ndcg@10"
ABLATION_HEADER = ["dataset", "system", "nDCG@10", "delta vs resrank", "p-value (paired t)", "significant (p<0.05)",
                   "forward passes", "processed tokens", "generated tokens", "median latency (ms/query)"]
POOL_HEADER = ["dataset", "pool", "first-stage nDCG@10", "first-stage Recall@100", "reranked nDCG@10",
               "reranked delta", "p-value (paired t)"]


def _per_query(record: Any) -> dict[str, float]:
    return record.result.per_query[METRIC]


def ablation_rows(out: Path, variants_on: dict[str, list[str]]) -> list[list[Any]]:
    """One row per (dataset, variant run on it); ``variants_on`` maps dataset -> variants."""
    rows: list[list[Any]] = []
    for dataset, variants in variants_on.items():
        base = read_metrics_json(out / "metrics" / dataset / f"{MAIN_VARIANT}.json")
        base_pq = _per_query(base)
        qids = sorted(base_pq)
        for variant in variants:
            record = read_metrics_json(out / "metrics" / dataset / f"{variant}.json")
            pq = _per_query(record)
            value = record.result.summary[METRIC]
            delta = value - base.result.summary[METRIC]
            p = paired_p_value([base_pq[q] for q in qids], [pq.get(q, 0.0) for q in qids])
            stats = read_json(out / "stats" / dataset / f"{variant}.json")["summary"]
            rows.append([
                dataset, variant, value, None if variant == MAIN_VARIANT else delta,
                None if variant == MAIN_VARIANT else p,
                "" if variant == MAIN_VARIANT else ("yes" if p < 0.05 else "no"),
                *(_count(stats[k]) for k in ("median_forward_passes", "median_processed_tokens",
                                              "median_generated_tokens")),
                round(1000 * stats["median_latency_s"], 2),
            ])
    return rows


def _count(value: float) -> float | int:
    """A median of counts: an integer unless it falls between two (even number of queries)."""
    return int(value) if float(value).is_integer() else value


def pool_rows(out: Path, datasets: list[str], pools: list[str]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for dataset in datasets:
        for pool in pools:
            first = read_metrics_json(out / "metrics" / dataset / f"{pool}.json")
            reranked_name = MAIN_VARIANT if pool == "bm25" else f"{MAIN_VARIANT}@{pool}"
            reranked = read_metrics_json(out / "metrics" / dataset / f"{reranked_name}.json")
            qids = sorted(_per_query(first))
            p = paired_p_value([_per_query(first)[q] for q in qids], [_per_query(reranked).get(q, 0.0) for q in qids])
            rows.append([dataset, pool, first.result.summary[METRIC], first.result.summary.get("recall@100"),
                         reranked.result.summary[METRIC],
                         reranked.result.summary[METRIC] - first.result.summary[METRIC], p])
    return rows


def write_ablation_tables(config_path: str | Path, out_dir: Path) -> None:
    config = validate(read_config_file(config_path), str(config_path))
    plan = make_plan(config)
    out = Path(plan.out)
    prov_path = out / "metrics.provenance.json"
    prov = read_json(prov_path) if prov_path.exists() else None
    variants_on = {d: plan.variants_on(d) for d in plan.ablation_datasets}
    write_table(out_dir / "ablations", ABLATION_HEADER, ablation_rows(out, variants_on),
                caption="Ablations: nDCG@10 of each variant against full ResRank (BM25 candidates), "
                        "paired t-test over all judged queries, and per-query reranking cost",
                notes=[f"Datasets the ablation variants ran on (ablations.datasets): "
                       f"{', '.join(plan.ablation_datasets) or 'none'}.",
                       "Latency is wall time per query on this machine (batched queries: batch time / batch size).",
                       "Forward passes, processed and generated tokens are medians over queries."],
                prov=prov)
    pools = [p for p in plan.pools]
    write_table(out_dir / "pools", POOL_HEADER, pool_rows(out, list(plan.with_corpus), pools),
                caption="Candidate pools: first stage and ResRank reranking of its top candidates",
                notes=["dense = the jointly trained encoder over the whole corpus; rrf = reciprocal-rank fusion "
                       "(k=60) of BM25 and dense; p-value compares reranked with its own first stage."],
                prov=prov)
