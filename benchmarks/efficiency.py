#!/usr/bin/env python
"""Efficiency benchmark CLI: ResRank (compressed input) vs full-text listwise reranking.

    python benchmarks/efficiency.py --backbone small --n 10 20 50 100 --repeats 5 \\
        --out-dir results/default/tables --fig-dir results/default/figures

Writes ``efficiency.csv``, ``efficiency.md`` and ``efficiency.json`` to ``--out-dir`` and
``efficiency.png`` / ``efficiency.pdf`` to ``--fig-dir`` (all atomically), and prints the
Markdown table. The measurement itself is ``resrank.bench.efficiency.run_efficiency``;
its module docstring defines every method and counter.

On a shared CPU, ``--threads 1`` gives far steadier timings than letting two OpenMP
threads fight other jobs for the cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout where resrank is not installed (e.g. the GPU image)
    sys.path.insert(0, str(ROOT))

from resrank.bench.efficiency import (  # noqa: E402
    BACKBONES,
    METHODS,
    PASSAGE_TOKENS,
    QUERY_TOKENS,
    markdown,
    run_efficiency,
    write_outputs,
)
from resrank.errors import ResRankError  # noqa: E402

log = logging.getLogger("efficiency")


def build_parser(**defaults: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Latency, forward passes, tokens and peak memory of ResRank vs full-text listwise reranking "
        "on one random-weight Qwen3 backbone."
    )
    parser.add_argument("--backbone", choices=BACKBONES, default="small",
                        help="reranker/encoder shape: tiny (tests), small (CPU), qwen3-0.6b, qwen3-4b")
    parser.add_argument("--n", type=int, nargs="+", default=[10, 20, 50, 100], metavar="N",
                        help="candidate list sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed queries per (method, n)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per (method, n) first")
    parser.add_argument("--passage-tokens", type=int, default=PASSAGE_TOKENS, help="tokens per passage")
    parser.add_argument("--query-tokens", type=int, default=QUERY_TOKENS,
                        help="prompt tokens besides the passages (instruction + query)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="auto",
                        help="float32, bfloat16, float16 or auto (bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop starting new repeats once the timed loop has run this long")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--out-dir", type=Path, default=Path("results/default/tables"))
    parser.add_argument("--fig-dir", type=Path, default=None, help="figures folder (default: --out-dir)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(**defaults)
    return parser


def main(argv: list[str] | None = None, **defaults: Any) -> int:
    args = build_parser(**defaults).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    began = time.perf_counter()
    try:
        rows = run_efficiency(
            args.backbone, args.n, args.repeats, args.passage_tokens, args.device, args.dtype, args.seed,
            query_tokens=args.query_tokens, warmup=args.warmup, methods=args.methods, threads=args.threads,
            max_seconds=args.max_seconds, measure_memory=not args.no_memory,
        )
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        settings.update(torch_threads=rows[0].threads, wall_seconds=round(time.perf_counter() - began, 1))
        paths = write_outputs(rows, args.out_dir, args.fig_dir, settings=settings)
    except ResRankError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(rows))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    print(f"total {time.perf_counter() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
