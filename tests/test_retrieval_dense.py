"""Exact dense retrieval must equal a brute-force ranking of all documents."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from resrank.errors import ResRankError
from resrank.retrieval.dense import dense_retrieve
from resrank.retrieval.ranking import finalize_hits


def brute_force(q: np.ndarray, d: np.ndarray, qids: list[str], docids: list[str], depth: int) -> dict:
    scores = q @ d.T
    return {qid: finalize_hits(zip(docids, scores[i].tolist(), strict=True), depth) for i, qid in enumerate(qids)}


@pytest.fixture
def vectors() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((13, 16))
    d = rng.standard_normal((500, 16))
    return q, d, [f"q{i}" for i in range(13)], [f"doc{i:03d}" for i in range(500)]


@pytest.mark.parametrize(("query_chunk", "doc_chunk"), [(1024, 65536), (4, 37), (1, 1)])
def test_dense_topk_equals_brute_force(vectors, query_chunk: int, doc_chunk: int) -> None:
    q, d, qids, docids = vectors
    run = dense_retrieve(q, qids, d, docids, depth=20, query_chunk=query_chunk, doc_chunk=doc_chunk)
    expected = brute_force(q, d, qids, docids, 20)
    for qid in qids:
        assert list(run[qid]) == list(expected[qid])
        assert run[qid] == pytest.approx(expected[qid], abs=1e-9)


def test_dense_accepts_torch_and_cosine(vectors) -> None:
    q, d, qids, docids = vectors
    run = dense_retrieve(
        torch.from_numpy(q).float(), qids, torch.from_numpy(d).float(), docids, depth=10, metric="cosine"
    )
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    expected = brute_force(qn, dn, qids, docids, 10)
    for qid in qids:
        # float32 vs float64: compare the sets and the scores (near-equal scores may swap)
        assert set(run[qid]) == set(expected[qid])
        assert sorted(run[qid].values()) == pytest.approx(sorted(expected[qid].values()), abs=1e-5)
        assert max(run[qid].values()) <= 1.0 + 1e-6


def test_dense_ties_removal_and_strict_scores() -> None:
    # five identical documents, one equal to the query's own id
    d = np.ones((5, 4))
    q = np.ones((1, 4))
    docids = ["e", "b", "self", "a", "c"]
    run = dense_retrieve(q, ["self"], d, docids, depth=3, remove_query_id_hits=True)
    assert list(run["self"]) == ["a", "b", "c"]
    values = list(run["self"].values())
    assert values[0] == 4.0 and all(x > y for x, y in itertools.pairwise(values))
    kept = dense_retrieve(q, ["self"], d, docids, depth=5)
    assert list(kept["self"]) == ["a", "b", "c", "e", "self"]


def test_dense_input_errors(vectors) -> None:
    q, d, qids, docids = vectors
    with pytest.raises(ResRankError, match="query ids"):
        dense_retrieve(q, qids[:-1], d, docids, depth=5)
    with pytest.raises(ResRankError, match="dim"):
        dense_retrieve(q[:, :8], qids, d, docids, depth=5)
    with pytest.raises(ResRankError, match="2-D"):
        dense_retrieve(q[0], qids[:1], d, docids, depth=5)
    with pytest.raises(ResRankError, match="metric"):
        dense_retrieve(q, qids, d, docids, depth=5, metric="l2")  # type: ignore[arg-type]
    assert dense_retrieve(q, qids, d[:0], [], depth=5) == {qid: {} for qid in qids}
