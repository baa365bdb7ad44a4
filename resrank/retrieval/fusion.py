"""Reciprocal-rank fusion of first-stage runs (e.g. BM25 + dense), computed by ranx.

RRF (Cormack et al., 2009) scores ``sum_r 1 / (k + rank_r(d))`` over the runs r that
retrieved d; only ranks matter. ranx ranks each run by its scores and breaks score ties
its own way, so each input run is first put in our deterministic order (score
descending, docid ascending; ``resrank.retrieval.ranking``) and handed to ranx with
distinct rank-derived scores. Equal fused scores (common: two documents at rank 1 of
different runs) are again ordered by docid, and the output is cut to ``depth``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from resrank.data.types import Run
from resrank.errors import ResRankError
from resrank.retrieval.ranking import finalize_hits, sort_hits

__all__ = ["RRF_K", "reciprocal_rank_fusion", "rrf_fuse"]

RRF_K = 60
"""The constant of the RRF paper and of ranx's default."""


def _rank_scored(run: Run, qids: Sequence[str]) -> dict[str, dict[str, float]]:
    """The run in our tie-broken order, with scores n, n-1, ..., 1 so ranx cannot reorder it."""
    out: dict[str, dict[str, float]] = {}
    for qid in qids:
        ranked = sort_hits(run.get(qid, {}).items())
        out[qid] = {docid: float(len(ranked) - i) for i, (docid, _) in enumerate(ranked)}
    return out


def rrf_fuse(runs: Sequence[Run], depth: int, k: int = RRF_K) -> Run:
    """Fuse ``runs`` with reciprocal-rank fusion (ranx ``fuse(method="rrf")``), top ``depth`` per query.

    Queries missing from some runs take contributions only from the runs that have them.
    """
    if len(runs) < 2:
        raise ResRankError(f"RRF needs at least two runs, got {len(runs)}")
    if depth < 1:
        raise ResRankError(f"RRF: depth must be >= 1, got {depth}")
    if k <= 0:
        raise ResRankError(f"RRF: k must be positive, got {k}")
    from ranx import Run as RanxRun
    from ranx import fuse

    qids = sorted(set().union(*(run.keys() for run in runs)))
    fused: Run = {qid: {} for qid in qids}
    live = [qid for qid in qids if any(run.get(qid) for run in runs)]
    if live:
        ranx_runs = [RanxRun(_rank_scored(run, live)) for run in runs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's uint64 -> int64 cast notice inside ranx
            result = fuse(runs=ranx_runs, norm=None, method="rrf", params={"k": k}).to_dict()
        for qid in live:
            fused[qid] = finalize_hits(result.get(qid, {}).items(), depth)
    return fused


reciprocal_rank_fusion = rrf_fuse
"""Alias used by the CLI (``resrank retrieve-fuse``)."""
