"""The paper-layout main table and our BM25 against Pyserini's published figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from resrank.config import read_config_file, validate
from resrank.errors import ResRankError
from resrank.io import read_json
from resrank.reports.format import write_table

REFERENCES = Path(__file__).resolve().parents[1] / "resources" / "references.yaml"
NOT_PUBLISHED = "not published"
UNAVAILABLE = "data unavailable"
NOT_RUN = "not run in this profile"
NO_TEXTS = "no passage texts"

REPRODUCED = (("bm25", "BM25 (ours)"), ("encoder-untrained", "Encoder, untrained (cosine)"),
              ("encoder-only", "Encoder-only (jointly trained)"), ("resrank", "ResRank (ours)"))


def load_references() -> dict[str, Any]:
    with open(REFERENCES, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_metrics(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ResRankError(f"{path}: metrics.csv not found; run the evaluate rules first")
    frame = pd.read_csv(path, dtype={"system": str, "dataset": str, "metric": str})
    missing = {"system", "dataset", "metric", "value", "n_queries"} - set(frame.columns)
    if missing:
        raise ResRankError(f"{path}: missing columns {sorted(missing)}")
    return frame


ALIAS_SUFFIXES = ("", "-run", "-irds")
"""A paper column is filled by the dataset of that name or its registry alternatives."""


def cell(frame: pd.DataFrame, system: str, dataset: str, metric: str = "ndcg@10") -> float | None:
    """One value of metrics.csv (None when that run does not exist)."""
    for suffix in ALIAS_SUFFIXES:
        hit = frame[(frame.system == system) & (frame.dataset == dataset + suffix) & (frame.metric == metric)]
        if not hit.empty:
            return float(hit.value.iloc[0])
    return None


def _alias_in(dataset: str, names: Any) -> str | None:
    return next((dataset + s for s in ALIAS_SUFFIXES if dataset + s in names), None)


def _status(dataset: str, config: dict[str, Any], unavailable: dict[str, str], system: str,
            rerankable: set[str]) -> str:
    name = _alias_in(dataset, config["datasets"]["eval"])
    if name is None:
        return NOT_RUN
    if name in unavailable:
        return UNAVAILABLE
    if system != "bm25" and name not in rerankable:
        return NO_TEXTS
    return NOT_RUN


def main_table(frame: pd.DataFrame, config: dict[str, Any], plan: Any) -> tuple[list[str], list[list[Any]]]:
    refs = load_references()
    columns, beir = refs["columns"], refs["beir"]
    extra = [d for d in config["datasets"]["eval"]
             if not any(d == c + s for c in columns for s in ALIAS_SUFFIXES)]
    header = ["system", *columns, "BEIR avg", *extra, "source"]
    rows: list[list[Any]] = []
    for ref in refs["systems"]:
        values = ref.get("ndcg@10", {})
        row: list[Any] = [ref["name"]] + [values.get(c, NOT_PUBLISHED) for c in columns]
        avg = ref.get("beir_average")
        if avg is None and all(c in values for c in beir):
            avg = round(sum(values[c] for c in beir) / len(beir), 4)
        row += [avg if avg is not None else NOT_PUBLISHED] + [NOT_PUBLISHED] * len(extra)
        row.append(refs["sources"][ref["source"]])
        rows.append(row)
    rerankable = set(plan.rerankable)
    for system, label in REPRODUCED:
        row = [label]
        for dataset in [*columns]:
            value = cell(frame, system, dataset)
            row.append(value if value is not None else
                       _status(dataset, config, plan.eval_unavailable, system, rerankable))
        got = [cell(frame, system, d) for d in beir]
        present = [v for v in got if v is not None]
        row.append(sum(present) / len(beir) if len(present) == len(beir) else f"n/a ({len(present)} of 8 sets)")
        for dataset in extra:
            value = cell(frame, system, dataset)
            row.append(value if value is not None else
                       _status(dataset, config, plan.eval_unavailable, system, rerankable))
        row.append("this run (metrics.csv)")
        rows.append(row)
    return header, rows


def bm25_vs_published(frame: pd.DataFrame, plan: Any, tolerance: float) -> tuple[list[str], list[list[Any]]]:
    refs = load_references()
    published = next(r for r in refs["systems"] if r["key"] == "bm25-pyserini")["ndcg@10"]
    header = ["dataset", "published (Pyserini)", "reproduced", "difference", "queries", "status"]
    rows: list[list[Any]] = []
    for dataset, ref in published.items():
        ours = cell(frame, "bm25", dataset)
        if ours is None:
            name = _alias_in(dataset, plan.eval_unavailable)
            reason = plan.eval_unavailable[name] if name else NOT_RUN
            rows.append([dataset, ref, None, None, None, f"not run: {reason}"])
            continue
        name = _alias_in(dataset, set(frame.dataset))
        n = int(frame[(frame.system == "bm25") & (frame.dataset == name)].n_queries.iloc[0])
        diff = ours - ref
        status = "ok" if abs(diff) <= tolerance else f"DIFFERS beyond ±{tolerance}"
        rows.append([dataset, ref, ours, diff, n, status])
    return header, rows


def write_tables(config_path: str | Path, metrics: Path, out_dir: Path) -> None:
    from resrank.workflow import make_plan

    config = validate(read_config_file(config_path), str(config_path))
    plan = make_plan(config)
    frame = read_metrics(metrics)
    prov_path = metrics.with_suffix(".provenance.json")
    prov = read_json(prov_path) if prov_path.exists() else None
    header, rows = main_table(frame, config, plan)
    write_table(out_dir / "main", header, rows,
                caption=f"nDCG@10, BM25 top-{config['reranker']['depth']} reranked in one pass "
                        f"(profile '{config['profile']}')",
                notes=[f"'{UNAVAILABLE}': " + "; ".join(f"{k}: {v}" for k, v in plan.eval_unavailable.items())
                       if plan.eval_unavailable else f"'{UNAVAILABLE}': none",
                       f"'{NO_TEXTS}': only a published run without passage texts is available, "
                       "so only BM25 is evaluated there.",
                       "Reference rows are transcribed from resrank/resources/references.yaml (source per row)."],
                prov=prov)
    tolerance = float(config["report"]["tolerance"])
    header, rows = bm25_vs_published(frame, plan, tolerance)
    write_table(out_dir / "bm25_vs_published", header, rows,
                caption=f"BM25 reproduced vs Pyserini published (nDCG@10, tolerance ±{tolerance})", prov=prov)
