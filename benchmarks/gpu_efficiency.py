#!/usr/bin/env python
"""Prepared GPU efficiency run: Qwen3-4B-shaped encoder and reranker (random weights, bf16).

One invocation on one H200, meant to finish well under 8 minutes::

    python3 benchmarks/gpu_efficiency.py            # writes to $OUT if set, else results/gpu/

All four methods at n = 20 and 100, 3 timed queries each after one warm-up, CUDA-event
timing, peak memory from ``torch.cuda.max_memory_allocated`` (read during the warm-up);
``--max-seconds`` (default 240) stops starting new repeats once the timed loop has run
that long, so even a slow machine finishes in about warm-up + 240 s + one sweep and still
writes its results. Suggested device call: ``python3 benchmarks/gpu_efficiency.py`` with a
540 s timeout. It needs only torch and transformers (no install of resrank,
no hub, no MiniLM package), so it runs under the GPU image's own python3.

The same script runs on CPU at a small size (used by the tests)::

    python benchmarks/gpu_efficiency.py --backbone tiny --device cpu --n 20 --repeats 1

Estimate for qwen3-4b on an H200 (eager transformers, batch 1): ~15-25 ms per decode step,
so fulltext-generate at n = 100 (720 decode steps) takes ~10-20 s per query and dominates;
(1 warm-up + 3 timed) x that ~ 1-1.5 min, everything else well under a minute, plus ~1 min
for imports and the random initialisation of two 4B models.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import efficiency as cli  # noqa: E402  (benchmarks/efficiency.py)


def main(argv: list[str] | None = None) -> int:
    began = time.perf_counter()
    out = Path(os.environ.get("OUT") or HERE.parent / "results" / "gpu")
    import torch
    import transformers

    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""), flush=True)
    code = cli.main(
        argv,
        backbone="qwen3-4b",
        device="cuda",
        dtype="auto",
        n=[20, 100],
        repeats=3,
        warmup=1,
        max_seconds=240.0,
        out_dir=out,
        fig_dir=out,
        verbose=True,
    )
    print(f"gpu_efficiency: exit {code} after {time.perf_counter() - began:.1f}s; outputs in {out}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
