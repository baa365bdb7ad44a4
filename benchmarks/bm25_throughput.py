#!/usr/bin/env python
"""BM25 first-stage throughput: index time and queries/second of both backends.

    python benchmarks/bm25_throughput.py [--depth 100] [--repeats 3] [--json OUT]
        [--config PROFILE] [--data PREPARED_DIR ...]

A thin command over ``resrank.bench.bm25_throughput`` (the same measurement the DAG's
``bm25_throughput`` rule runs, via ``resrank bench bm25``, into the efficiency section of the
report: ``results/<profile>/tables/bm25_throughput.*``).

Collections: BEIR SciFact from ``$RESRANK_DATA/beir/scifact`` (or ``--data-root``;
skipped with a message when absent), the embedded stdlib-docstrings test set (when
``resrank.data.embedded`` is importable) and any prepared dataset folders given with
``--data``. BM25 settings: k1 0.9, b 0.4, query-id hits removed, or a profile's
``retrieval`` section with ``--config``. For each backend it reports

* ``index_s``: analysis + index construction (``BM25Index.build``), one run;
* ``analysis_s``: the analyzer alone over the corpus (part of ``index_s``, shared by
  both backends, so the index-time difference is the backends' own);
* ``search_s`` / ``qps``: ``search`` over all queries at ``--depth`` (query analysis
  included), the fastest of ``--repeats`` runs (with ``--bm25s-backend numba`` the first
  run includes numba's JIT compile, so use ``--repeats`` >= 2);
* ``ndcg@10`` as a sanity check that both backends return the same quality;

and the ratios bm25s / rank-bm25 (qps, and index time) with the fraction of queries whose
top-10 is identical. ``--json OUT`` writes the same figures (atomically), in the layout of
the report's ``bm25_throughput.json``. Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout where resrank is not installed
    sys.path.insert(0, str(ROOT))

from resrank.bench.bm25_throughput import (  # noqa: E402
    collections,
    environment,
    measure_bm25_throughput,
    results_json,
    throughput_settings,
)
from resrank.config import RetrievalConfig  # noqa: E402
from resrank.data.types import Dataset  # noqa: E402
from resrank.errors import ResRankError  # noqa: E402
from resrank.io import write_json  # noqa: E402
from resrank.retrieval.bm25 import BACKENDS  # noqa: E402


def load_collections(data_root: str | None, only: list[str] | None) -> list[Dataset]:
    """The collections available here; a message (not an error) for each one that is not."""
    found: list[Dataset] = []
    if only is None or "scifact" in only:
        folder = Path(data_root) / "beir" / "scifact" if data_root else None
        if folder is None:
            print("scifact: skipped (RESRANK_DATA is not set and no --data-root given)")
        elif not (folder / "corpus.jsonl").is_file():
            print(f"scifact: skipped ({folder} has no corpus.jsonl)")
        else:
            from resrank.data.sources import load_beir

            found.append(load_beir(folder, "test", name="scifact"))
    if only is None or "embedded" in only:
        try:
            from resrank.data.embedded import build_embedded
        except ImportError as err:
            print(f"embedded: skipped (resrank.data.embedded not importable: {err})")
        else:
            try:
                found.append(build_embedded("test"))
            except ResRankError as err:
                print(f"embedded: skipped ({err})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("RESRANK_DATA"), help="default: $RESRANK_DATA")
    parser.add_argument("--collections", nargs="+", choices=["scifact", "embedded"], default=None)
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--depth", type=int, default=None, help="default: 100, or the --config profile's")
    parser.add_argument("--config", default=None, help="profile config: k1, b, depth and query-id removal")
    parser.add_argument("--data", nargs="+", default=[], metavar="DIR", help="prepared dataset folders to add")
    parser.add_argument("--repeats", type=int, default=3, help="timed search passes; the fastest is reported")
    parser.add_argument(
        "--bm25s-backend",
        choices=["numpy", "numba"],
        default="numpy",
        help="bm25s selection path: numpy (exact per query) or numba (batched, JIT-compiled)",
    )
    parser.add_argument("--n-threads", type=int, default=0, help="numba retrieval threads (0: one; -1: all)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures as JSON")
    args = parser.parse_args(argv)

    try:
        if args.config:
            from resrank.config import load_config

            cfg = load_config(args.config).retrieval
        else:
            cfg = RetrievalConfig(backend="bm25s", k1=0.9, b=0.4, depth=100, remove_query_id_hits=True)
        if args.depth is not None:
            cfg = dataclasses.replace(cfg, depth=args.depth)
        datasets = load_collections(args.data_root, args.collections)
        if args.data:
            from resrank.data.prepared import read_prepared

            datasets += [read_prepared(folder) for folder in args.data]
        rows = measure_bm25_throughput(
            datasets,
            cfg,
            args.repeats,
            backends=args.backends,
            n_threads=args.n_threads,
            bm25s_backend=args.bm25s_backend,
        )
    except ResRankError as err:
        print(f"bm25_throughput: error: {err}", file=sys.stderr)
        return 2
    env = environment(args.n_threads, args.bm25s_backend)
    results = results_json(rows, throughput_settings(cfg, args.repeats), env)
    for dataset in datasets:
        entry = collections(rows).get(dataset.name)
        if entry is None:
            continue
        print(f"\n{dataset.name}: {len(dataset.corpus or {})} docs, {len(dataset.queries)} queries, depth {cfg.depth}")
        print(f"{'backend':<10} {'analysis_s':>10} {'index_s':>9} {'search_s':>9} {'qps':>9} {'ndcg@10':>8}")
        for row in entry["backends"].values():
            ndcg = "n/a" if row["ndcg@10"] is None else f"{row['ndcg@10']:.4f}"
            print(
                f"{row['backend']:<10} {row['analysis_s']:>10.2f} {row['index_s']:>9.2f} "
                f"{row['search_s']:>9.3f} {row['qps']:>9.1f} {ndcg:>8}"
            )
        if "qps_ratio_bm25s_over_rank_bm25" in entry:
            print(
                f"bm25s / rank-bm25: {entry['qps_ratio_bm25s_over_rank_bm25']}x queries/s, "
                f"index time rank-bm25 / bm25s: {entry['index_time_ratio_rank_bm25_over_bm25s']}x, "
                f"identical top-10: {entry['top10_agree']:.0%} of queries"
            )
    if not results["collections"]:
        print("no collection available: nothing measured")
    if args.json:
        write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
