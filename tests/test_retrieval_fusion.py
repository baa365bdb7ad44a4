"""Reciprocal-rank fusion (via ranx) must give the hand-computed RRF scores and order."""

from __future__ import annotations

import itertools

import pytest

from resrank.errors import ResRankError
from resrank.retrieval.fusion import rrf_fuse


def test_rrf_on_two_toy_runs_matches_hand_computation() -> None:
    bm25 = {"q1": {"a": 9.0, "b": 7.0, "c": 5.0}, "q2": {"x": 1.0}}
    dense = {"q1": {"c": 0.9, "d": 0.8, "a": 0.1}, "q2": {"y": 0.5, "x": 0.4}}
    fused = rrf_fuse([bm25, dense], depth=10, k=60)
    # q1: a = 1/61 + 1/63, c = 1/63 + 1/61 (tie -> docid a first), b = 1/62, d = 1/62 (tie -> b first)
    assert list(fused["q1"]) == ["a", "c", "b", "d"]
    assert fused["q1"]["a"] == pytest.approx(1 / 61 + 1 / 63, abs=1e-6)
    assert fused["q1"]["c"] == pytest.approx(fused["q1"]["a"] - 1e-6, abs=1e-12)  # nudged one unit below its tie
    assert fused["q1"]["b"] == pytest.approx(1 / 62, abs=1e-6)
    # q2: x = 1/61 + 1/62, y = 1/61
    assert list(fused["q2"]) == ["x", "y"]
    assert fused["q2"]["x"] == pytest.approx(1 / 61 + 1 / 62, abs=1e-6)
    assert fused["q2"]["y"] == pytest.approx(1 / 61, abs=1e-6)
    for hits in fused.values():
        values = list(hits.values())
        assert all(x > y for x, y in itertools.pairwise(values))


def test_rrf_uses_our_tie_break_for_input_ties_and_keeps_depth() -> None:
    # "m" and "n" tie in run one: docid order ranks m first (1/61), n second (1/62)
    one = {"q": {"n": 1.0, "m": 1.0}}
    two = {"q": {"z": 3.0}, "other": {"p": 1.0}}
    fused = rrf_fuse([one, two], depth=2)
    assert list(fused["q"]) == ["m", "z"]
    assert fused["q"]["m"] == pytest.approx(1 / 61, abs=1e-6)
    assert fused["other"] == pytest.approx({"p": 1 / 61}, abs=1e-6)  # a query only one run has


def test_rrf_small_k_and_errors() -> None:
    fused = rrf_fuse([{"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 2.0}}], depth=5, k=1)
    assert fused["q"] == pytest.approx({"b": 1 / 3 + 1 / 2, "a": 1 / 2}, abs=1e-6)
    assert rrf_fuse([{"q": {}}, {"q": {}}], depth=5) == {"q": {}}
    with pytest.raises(ResRankError, match="two runs"):
        rrf_fuse([{"q": {"a": 1.0}}], depth=5)
    with pytest.raises(ResRankError, match="depth"):
        rrf_fuse([{"q": {}}, {"q": {}}], depth=0)
