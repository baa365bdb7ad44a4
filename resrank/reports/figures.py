"""Figures (PNG and PDF, labelled axes with units) from the DAG's metric, stats and log files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from resrank.errors import ResRankError

SYSTEM_ORDER = ("bm25", "encoder-untrained", "encoder-only", "resrank")


def _save(fig: Any, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def ndcg_per_dataset(metrics_csv: Path, stem: Path, variants: list[str]) -> list[Path]:
    frame = pd.read_csv(metrics_csv)
    frame = frame[(frame.metric == "ndcg@10") & (frame.system.isin([*SYSTEM_ORDER, *variants]))]
    if frame.empty:
        raise ResRankError(f"{metrics_csv}: no nDCG@10 rows to plot")
    systems = [s for s in (*SYSTEM_ORDER, *[v for v in variants if v not in SYSTEM_ORDER]) if s in set(frame.system)]
    datasets = sorted(set(frame.dataset))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets) + 2), 4))
    for i, system in enumerate(systems):
        values = [frame[(frame.system == system) & (frame.dataset == d)].value for d in datasets]
        heights = [float(v.iloc[0]) if len(v) else 0.0 for v in values]
        ax.bar([x + i * width for x in range(len(datasets))], heights, width, label=system)
    ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(datasets))], datasets)
    ax.set_ylabel("nDCG@10")
    ax.set_xlabel("dataset")
    ax.set_title("nDCG@10 per dataset and system (BM25 candidates)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, stem)


def ablation_deltas(ablations_csv: Path, stem: Path) -> list[Path]:
    frame = pd.read_csv(ablations_csv)
    frame = frame[frame["delta vs resrank"].notna()]
    datasets = sorted(set(frame.dataset))
    variants = list(dict.fromkeys(frame.system))
    width = 0.8 / max(1, len(datasets))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(variants) + 2), 4))
    for i, dataset in enumerate(datasets):
        sub = frame[frame.dataset == dataset].set_index("system")
        xs = [x + i * width for x in range(len(variants))]
        deltas = [float(sub.loc[v, "delta vs resrank"]) if v in sub.index else 0.0 for v in variants]
        bars = ax.bar(xs, deltas, width, label=dataset)
        for bar, variant in zip(bars, variants, strict=True):
            if variant in sub.index and float(sub.loc[variant, "p-value (paired t)"]) < 0.05:
                y = bar.get_height()
                ax.annotate("*", (bar.get_x() + bar.get_width() / 2, y), ha="center",
                            va="bottom" if y >= 0 else "top", fontsize=12)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(datasets) - 1) / 2 for x in range(len(variants))], variants, rotation=20)
    ax.set_ylabel("Δ nDCG@10 vs full ResRank")
    ax.set_xlabel("variant")
    ax.set_title("Ablations (* = paired t-test p < 0.05)")
    ax.legend(fontsize=7)
    return _save(fig, stem)


def loss_curves(models_dir: Path, stem: Path) -> list[Path]:
    logs = sorted(models_dir.glob("*/*/train_log.jsonl"))
    if not logs:
        raise ResRankError(f"{models_dir}: no loss logs (*/<stage>/train_log.jsonl) found")
    stages = sorted({p.parent.name for p in logs})
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        for log in [p for p in logs if p.parent.name == stage]:
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if "loss" in r]
            if rows:
                ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=log.parent.parent.name)
        ax.set_title(f"training loss, {stage}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (L_rank + λ·L_retrieval)")
        ax.legend(fontsize=7)
    return _save(fig, stem)


def efficiency_scaling(efficiency_csv: Path, stem: Path) -> list[Path]:
    """Log-log latency and processed tokens against n; the legend carries each method's
    least-squares growth exponent (slope of log latency on log n)."""
    frame = pd.read_csv(efficiency_csv)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, sub in frame.groupby("method"):
        sub = sub.sort_values("n_candidates")
        slope = np.polyfit(np.log(sub.n_candidates), np.log(sub.median_latency_s), 1)[0] if len(sub) > 1 else None
        label = f"{method} (slope {slope:.2f})" if slope is not None else method
        ax1.plot(sub.n_candidates, sub.median_latency_s * 1000, marker="o", label=label)
        ax2.plot(sub.n_candidates, sub.processed_tokens, marker="o", label=method)
    ns = sorted(frame.n_candidates.unique())
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("candidates per query, n (log scale)")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("median latency (ms/query)")
    ax1.set_title("reranking latency")
    ax2.set_ylabel("processed tokens per query")
    ax2.set_title("tokens processed by the reranker")
    ax1.legend(fontsize=7)
    return _save(fig, stem)


def position_sensitivity(position_files: list[Path], stem: Path) -> list[Path]:
    records = [json.loads(p.read_text()) for p in position_files]
    if not records:
        raise ResRankError("no position-study files to plot")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [f"{r['system']}\n{r['dataset']}" for r in records]
    orders = list(records[0]["orders"])
    width = 0.8 / len(orders)
    for i, order in enumerate(orders):
        ax.bar([x + i * width for x in range(len(records))],
               [r["orders"].get(order, {}).get("ndcg@10", 0.0) for r in records], width, label=order)
    ax.set_xticks([x + width * (len(orders) - 1) / 2 for x in range(len(records))], labels, fontsize=7)
    ax.set_ylabel("nDCG@10")
    ax.set_xlabel("system / dataset")
    ax.set_title("Position sensitivity: same candidates, different input orders")
    ax.legend(fontsize=7)
    return _save(fig, stem)


def write_figures(config_path: str | Path, out_dir: Path, position: list[Path]) -> None:
    """Every figure of the report, from the files the DAG produced for this profile."""
    from resrank.config import read_config_file, validate
    from resrank.workflow import make_plan

    config = validate(read_config_file(config_path), str(config_path))
    plan = make_plan(config)
    out = Path(plan.out)
    ndcg_per_dataset(out / "metrics.csv", out_dir / "ndcg_per_dataset", list(plan.variants))
    ablation_deltas(out / "tables" / "ablations.csv", out_dir / "ablation_deltas")
    loss_curves(out / "models", out_dir / "loss_curves")
    efficiency_scaling(out / "tables" / "efficiency.csv", out_dir / "efficiency_scaling")
    position_sensitivity(position, out_dir / "position_sensitivity")
