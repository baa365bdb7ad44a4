"""The efficiency benchmark as a DAG step: settings from the profile config, outputs for the report."""

from __future__ import annotations

import csv
from pathlib import Path

from resrank.bench.efficiency import CSV_COLUMNS, run_efficiency, write_outputs
from resrank.config import read_config_file, validate
from resrank.reports.format import write_table


def efficiency_from_config(config_path: str | Path, out_dir: Path, fig_dir: Path) -> None:
    """Measure the four reranking methods with the profile's ``efficiency`` settings."""
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
