#!/usr/bin/env python
"""BM25 first-stage throughput: index time and queries/second of both backends.

    python benchmarks/bm25_throughput.py [--depth 100] [--repeats 3] [--json OUT]

Collections: BEIR SciFact from ``$RESRANK_DATA/beir/scifact`` (or ``--data-root``;
skipped with a message when absent) and the embedded stdlib-docstrings test set (when
``resrank.data.embedded`` is importable). For each backend it reports

* ``index_s``: analysis + index construction (``BM25Index.build``), one run;
* ``analysis_s``: the analyzer alone over the corpus (part of ``index_s``, shared by
  both backends, so the index-time difference is the backends' own);
* ``search_s`` / ``qps``: ``search`` over all queries at ``--depth`` (query analysis
  included), the fastest of ``--repeats`` runs (with ``--bm25s-backend numba`` the first
  run includes numba's JIT compile, so use ``--repeats`` >= 2);
* ``ndcg@10`` as a sanity check that both backends return the same quality;

and the ratios bm25s / rank-bm25 (qps, and index time). ``--json OUT`` writes the same
figures (atomically) for the efficiency report. Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout where resrank is not installed
    sys.path.insert(0, str(ROOT))

from resrank.config import RetrievalConfig  # noqa: E402
from resrank.data.types import Dataset  # noqa: E402
from resrank.errors import ResRankError  # noqa: E402
from resrank.io import write_json  # noqa: E402
from resrank.retrieval.analyzer import LuceneEnglishAnalyzer  # noqa: E402
from resrank.retrieval.bm25 import BACKENDS, BM25Index  # noqa: E402


def load_collections(data_root: str | None, only: list[str] | None) -> list[Dataset]:
    """The collections available here; a message (not an error) for each one that is not."""
    found: list[Dataset] = []
    if not only or "scifact" in only:
        folder = Path(data_root) / "beir" / "scifact" if data_root else None
        if folder is None:
            print("scifact: skipped (RESRANK_DATA is not set and no --data-root given)")
        elif not (folder / "corpus.jsonl").is_file():
            print(f"scifact: skipped ({folder} has no corpus.jsonl)")
        else:
            from resrank.data.sources import load_beir

            found.append(load_beir(folder, "test", name="scifact"))
    if not only or "embedded" in only:
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


def ndcg10(run: dict[str, dict[str, float]], dataset: Dataset) -> float | None:
    try:
        from resrank.eval.metrics import evaluate
    except ImportError:
        return None
    return evaluate(run, dataset.qrels, ["ndcg@10"]).summary["ndcg@10"]


def measure(
    dataset: Dataset, backend: str, depth: int, repeats: int, n_threads: int, bm25s_backend: str
) -> dict[str, Any]:
    assert dataset.corpus is not None
    passages = list(dataset.corpus.values())
    cfg = RetrievalConfig(backend=backend, k1=0.9, b=0.4, depth=depth, remove_query_id_hits=True)  # type: ignore[arg-type]

    start = time.perf_counter()
    LuceneEnglishAnalyzer().analyze_many(p.contents for p in passages)
    analysis_s = time.perf_counter() - start

    start = time.perf_counter()
    index = BM25Index.build(passages, cfg, n_threads=n_threads, bm25s_backend=bm25s_backend)  # type: ignore[arg-type]
    index_s = time.perf_counter() - start

    times = []
    run: dict[str, dict[str, float]] = {}
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run = index.search(dataset.queries)
        times.append(time.perf_counter() - start)
    search_s = min(times)
    return {
        "backend": backend,
        "n_docs": len(passages),
        "n_queries": len(dataset.queries),
        "depth": depth,
        "analysis_s": round(analysis_s, 4),
        "index_s": round(index_s, 4),
        "search_s": round(search_s, 4),
        "search_runs_s": [round(t, 4) for t in times],
        "qps": round(len(dataset.queries) / search_s, 2) if search_s > 0 else None,
        "ndcg@10": ndcg10(run, dataset),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("RESRANK_DATA"), help="default: $RESRANK_DATA")
    parser.add_argument("--collections", nargs="+", choices=["scifact", "embedded"], default=None)
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--depth", type=int, default=100)
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

    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "n_threads": args.n_threads,
            "bm25s_backend": args.bm25s_backend,
        },
        "collections": {},
    }
    import bm25s  # noqa: F401  (import costs stay out of the first backend's index time)
    import rank_bm25  # noqa: F401

    LuceneEnglishAnalyzer()("warm-up: the regex engine's Unicode tables, Ünïcode αβ 中文 😀")

    for dataset in load_collections(args.data_root, args.collections):
        rows = {
            b: measure(dataset, b, args.depth, args.repeats, args.n_threads, args.bm25s_backend) for b in args.backends
        }
        entry: dict[str, Any] = {"backends": rows}
        if "bm25s" in rows and "rank-bm25" in rows:
            fast, slow = rows["bm25s"], rows["rank-bm25"]
            entry["qps_ratio_bm25s_over_rank_bm25"] = round(fast["qps"] / slow["qps"], 2)
            entry["index_time_ratio_rank_bm25_over_bm25s"] = round(slow["index_s"] / fast["index_s"], 2)
        results["collections"][dataset.name] = entry
        print(f"\n{dataset.name}: {len(dataset.corpus or {})} docs, {len(dataset.queries)} queries, depth {args.depth}")
        print(f"{'backend':<10} {'analysis_s':>10} {'index_s':>9} {'search_s':>9} {'qps':>9} {'ndcg@10':>8}")
        for row in rows.values():
            ndcg = "n/a" if row["ndcg@10"] is None else f"{row['ndcg@10']:.4f}"
            print(
                f"{row['backend']:<10} {row['analysis_s']:>10.2f} {row['index_s']:>9.2f} "
                f"{row['search_s']:>9.3f} {row['qps']:>9.1f} {ndcg:>8}"
            )
        if "qps_ratio_bm25s_over_rank_bm25" in entry:
            print(
                f"bm25s / rank-bm25: {entry['qps_ratio_bm25s_over_rank_bm25']}x queries/s, "
                f"index time rank-bm25 / bm25s: {entry['index_time_ratio_rank_bm25_over_bm25s']}x"
            )
    if not results["collections"]:
        print("no collection available: nothing measured")
    if args.json:
        write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
