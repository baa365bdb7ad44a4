"""The benchmarks as DAG steps (reranking efficiency, BM25 throughput): settings from the profile config,
outputs for the report."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from resrank.config import load_config, read_config_file, validate
from resrank.reports.format import write_table

RANK_BM25_MAX_DOCUMENTS = 1_000_000
"""rank-bm25 is not timed on larger corpora (it scores every document per query term in Python)."""


def efficiency_from_config(config_path: str | Path, out_dir: Path, fig_dir: Path) -> None:
    """Measure the four reranking methods with the profile's ``efficiency`` settings."""
    from resrank.bench.efficiency import CSV_COLUMNS, run_efficiency, write_outputs  # torch: imported only here

    config = validate(read_config_file(config_path), str(config_path))
    settings = config["efficiency"]
    rows = run_efficiency(backbone=settings["backbone"], n_candidates=settings["n_candidates"],
                          repeats=settings["repeats"], passage_tokens=settings["passage_tokens"],
                          seed=config["seed"], threads=1)  # one thread: steadier timings on a shared CPU
    write_outputs(rows, out_dir, fig_dir, settings=settings)
    with open(out_dir / "efficiency.csv", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    write_table(out_dir / "efficiency", list(CSV_COLUMNS), [[r[c] for c in CSV_COLUMNS] for r in records],
                caption=f"Reranking cost per query on one {settings['backbone']} Qwen3-architecture backbone "
                        "(random weights): ResRank one-step and autoregressive vs full-text one-step and "
                        "RankGPT-style generation",
                notes=["Latency in seconds (median and p90 over repeats); peak memory in MB; "
                       "growth exponents and speedups: efficiency.md and efficiency.json."],
                formats=("tex",))


def bm25_throughput_from_config(config_path: str | Path, data_dirs: Sequence[str | Path], out_dir: Path,
                                repeats: int | None = None,
                                rank_bm25_max_documents: int | None = RANK_BM25_MAX_DOCUMENTS) -> None:
    """Time both BM25 backends on the prepared datasets in ``data_dirs`` with the profile's
    ``retrieval`` settings (k1, b, depth); ``repeats`` defaults to the ``efficiency`` section's."""
    from resrank.bench.bm25_throughput import environment, measure_bm25_throughput, throughput_settings, write_outputs
    from resrank.data.prepared import read_manifest, read_prepared
    from resrank.provenance import provenance

    cfg = load_config(config_path)
    repeats = int(cfg.raw["efficiency"]["repeats"]) if repeats is None else repeats
    checksums: dict[str, str] = {}
    for folder in map(Path, data_dirs):
        for name, info in read_manifest(folder).get("files", {}).items():
            checksums[f"{folder.name}/{name}"] = info.get("sha256")
    skipped: dict[str, str] = {}
    rows = measure_bm25_throughput((read_prepared(d) for d in data_dirs), cfg.retrieval, repeats,
                                   rank_bm25_max_documents=rank_bm25_max_documents, skipped=skipped)
    settings = throughput_settings(cfg.retrieval, repeats, rank_bm25_max_documents=rank_bm25_max_documents)
    write_outputs(rows, out_dir, settings, skipped=skipped, env=environment(),
                  prov=provenance(cfg.fingerprint(), checksums, profile=cfg.profile))
