"""Deterministic ranking helpers shared by every first stage (BM25, dense, RRF).

Two runs of the same system must write byte-identical TREC files, and ``trec_eval`` /
ranx must see the order we chose, so:

* ties are broken by docid ascending after rounding scores to :data:`TIE_DECIMALS`
  decimals, which absorbs float summation-order noise (1e-14 at BM25 magnitudes) so two
  backends computing the same score rank identically;
* the final scores are made *strictly* decreasing at the resolution they are read back
  with: ``resrank.io.write_trec_run`` prints 6 decimals and ``trec_eval`` (and
  ``resrank.eval.metrics``) compare the parsed scores as 32-bit floats. Each score is
  rounded to 1e-6; when it would not be below its predecessor, in either the 6-decimal
  or the float32 view, it is lowered in 1e-6 steps until it is. The order never changes;
  a tied score moves by about one float32 ulp (2e-6 at BM25 magnitudes ~20) per tied
  predecessor. Otherwise ``trec_eval`` would re-break the ties by docid *descending*.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

TIE_DECIMALS = 9
"""Scores equal to this many decimals count as tied (then docid ascending decides)."""

SCORE_DECIMALS = 6
"""Decimals of a written TREC run score; strictly decreasing at this resolution."""


def rank_key(item: tuple[str, float]) -> tuple[float, str]:
    """Sort key: score descending (rounded to TIE_DECIMALS), then docid ascending."""
    docid, score = item
    return (-round(float(score), TIE_DECIMALS), docid)


def sort_hits(hits: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Hits in deterministic rank order."""
    return sorted(hits, key=rank_key)


def strictly_decreasing(ranked: list[tuple[str, float]], decimals: int = SCORE_DECIMALS) -> dict[str, float]:
    """Scores of already-ranked hits nudged to strictly decrease when printed with ``decimals`` and as float32."""
    scale = 10**decimals
    out: dict[str, float] = {}
    previous: int | None = None
    previous32 = math.inf
    for docid, score in ranked:
        units = round(float(score) * scale)
        if previous is not None:
            units = min(units, previous - 1)
            while _float32(units / scale) >= previous32:
                units -= 1
        out[docid] = units / scale
        previous, previous32 = units, _float32(units / scale)
    return out


def _float32(value: float) -> float:
    """``value`` as a C float, the precision trec_eval keeps scores in."""
    return struct.unpack("f", struct.pack("f", value))[0]


def finalize_hits(
    hits: Iterable[tuple[str, float]],
    depth: int,
    exclude: str | None = None,
    decimals: int = SCORE_DECIMALS,
) -> dict[str, float]:
    """Rank ``hits``, drop docid ``exclude`` (the query's own id), cut to ``depth``, nudge ties."""
    ranked = [hit for hit in sort_hits(hits) if hit[0] != exclude][:depth]
    return strictly_decreasing(ranked, decimals)
