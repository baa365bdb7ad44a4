"""Gather per-run metric files into the tidy ``metrics.csv`` every table derives from."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from resrank.config import read_config_file, validate
from resrank.eval.metrics import read_metrics_json
from resrank.io import atomic_write, write_json
from resrank.provenance import provenance

COLUMNS = ("system", "dataset", "metric", "value", "n_queries")


def metric_rows(paths: list[Path]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in sorted(paths):
        record = read_metrics_json(path)
        for metric, value in sorted(record.result.summary.items()):
            rows.append({"system": record.system, "dataset": record.dataset, "metric": metric,
                         "value": float(value), "n_queries": record.result.n_queries})
    return rows


def collect_metrics(config_path: str | Path, paths: list[Path], out: Path) -> None:
    config = validate(read_config_file(config_path), str(config_path))
    rows = metric_rows(paths)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "value": f"{row['value']:.6f}"})
    with atomic_write(out) as handle:
        handle.write(buffer.getvalue())
    sources = {str(p): read_metrics_json(p).provenance.get("data_sha256", {}) for p in paths}
    write_json(out.with_suffix(".provenance.json"), provenance(
        _fingerprint(config), {f"{k}::{n}": v for k, d in sources.items() for n, v in d.items()},
        profile=config["profile"], metric_files=len(paths)))


def _fingerprint(config: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
