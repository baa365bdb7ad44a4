"""BM25 must score as Lucene's BM25Similarity, identically in both backends."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from resrank.config import RetrievalConfig
from resrank.data.types import Passage, Query, Run
from resrank.errors import ResRankError
from resrank.io import read_trec_run, write_trec_run
from resrank.retrieval.bm25 import BACKENDS, BM25Index, bm25_retrieve, lucene_idf, lucene_norm_length
from resrank.retrieval.ranking import strictly_decreasing

K1, B = 0.9, 0.4


def cfg(backend: str = "bm25s", depth: int = 10, remove: bool = True) -> RetrievalConfig:
    return RetrievalConfig(backend=backend, k1=K1, b=B, depth=depth, remove_query_id_hits=remove)


def lucene_term(tf: float, df: int, n: int, dl: float, avgdl: float) -> float:
    """One term's contribution, written out from Lucene's BM25Similarity."""
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + K1 * (1 - B + B * dl / avgdl))


TOY = [
    Passage("d1", "cat cat dog"),  # terms: cat x2, dog; dl=3
    Passage("d2", "dog bird"),  # dog, bird; dl=2
    Passage("d3", "fish"),  # fish; dl=1
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_toy_corpus_matches_hand_computed_lucene_scores(backend: str) -> None:
    index = BM25Index.build(TOY, cfg(backend))
    avgdl = 6 / 3
    # idf(cat) = ln(1 + 2.5/1.5) = ln(8/3); idf(dog) = ln(1 + 1.5/2.5) = ln(1.6)
    d1 = math.log(8 / 3) * 2 / (2 + 0.9 * (0.6 + 0.4 * 3 / 2)) + math.log(1.6) * 1 / (1 + 0.9 * (0.6 + 0.4 * 3 / 2))
    d2 = math.log(1.6) / (1 + 0.9 * (0.6 + 0.4 * 2 / 2))
    assert d1 == pytest.approx(0.862865, abs=1e-6)
    assert d2 == pytest.approx(0.247371, abs=1e-6)
    assert d1 == pytest.approx(lucene_term(2, 1, 3, 3, avgdl) + lucene_term(1, 2, 3, 3, avgdl))
    scores = index.scores("cats and dogs")
    assert scores == pytest.approx({"d1": d1, "d2": d2}, abs=1e-12)  # d3 shares no term: not a hit
    run = index.search([Query("q", "cats and dogs")])
    assert list(run["q"]) == ["d1", "d2"]
    assert run["q"] == pytest.approx({"d1": d1, "d2": d2}, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_query_terms_count_repeatedly(backend: str) -> None:
    index = BM25Index.build(TOY, cfg(backend))
    once, twice = index.scores("dog"), index.scores("dog dog")
    assert twice == pytest.approx({d: 2 * s for d, s in once.items()}, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lossy", [True, False])
def test_long_documents_use_lucenes_quantised_length(backend: str, lossy: bool) -> None:
    docs = [Passage("long", " ".join(["x"] * 99 + ["cat"])), Passage("short", "cat dog")]
    index = BM25Index.build(docs, cfg(backend), lossy_norms=lossy)
    avgdl = (100 + 2) / 2  # avgdl uses exact lengths in Lucene
    dl = 96 if lossy else 100  # the one-byte norm decodes 100 as 96
    assert index.scores("cat")["long"] == pytest.approx(lucene_term(1, 2, 2, dl, avgdl), abs=1e-12)
    assert index.scores("cat")["short"] == pytest.approx(lucene_term(1, 2, 2, 2, avgdl), abs=1e-12)


def test_lucene_norm_length_table() -> None:
    lengths = np.array([0, 1, 23, 24, 39, 40, 41, 100, 200, 1000])
    assert lucene_norm_length(lengths).tolist() == [0, 1, 23, 24, 39, 40, 40, 96, 200, 984]
    assert (lucene_norm_length(np.arange(5000)) <= np.arange(5000)).all()
    assert float(lucene_idf(1, 3)) == pytest.approx(math.log(8 / 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_documents_do_not_count_in_doc_count(backend: str) -> None:
    """Lucene's docCount and avgdl only see documents with at least one indexed term."""
    with_empty = [*TOY, Passage("stop", "the and of"), Passage("blank", "")]
    index = BM25Index.build(with_empty, cfg(backend))
    assert index.scores("cats and dogs") == pytest.approx(BM25Index.build(TOY, cfg(backend)).scores("cats and dogs"))


def test_exact_lengths_match_bm25s_own_lucene_method() -> None:
    """With lossy_norms=False our bm25s index equals bm25s's native method="lucene" index."""
    import bm25s

    from resrank.retrieval.analyzer import analyze

    passages, queries = synthetic_collection(n_docs=120, n_queries=10, seed=3)
    ours = BM25Index.build(passages, cfg(), lossy_norms=False)
    native = bm25s.BM25(k1=K1, b=B, method="lucene", dtype="float64")
    native.index([analyze(p.contents) for p in passages], show_progress=False)
    for query in queries:
        theirs = native.get_scores(analyze(query.text) or [""])
        mine = ours.scores(query.text)
        expected = {p.docid: float(s) for p, s in zip(passages, theirs, strict=True) if s > 0}
        assert mine == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------ backends agree

_WORDS_TEXT = """
protein cell gene expression cancer tumor patient risk mortality therapy treatment dose receptor
signal pathway kinase mouse model brain neuron memory infection virus vaccine antibody immune
response blood pressure heart disease diabetes insulin obesity diet study trial effect increase
decrease level factor growth development stem tissue bone muscle
"""
_WORDS = _WORDS_TEXT.split()


def synthetic_collection(n_docs: int, n_queries: int, seed: int) -> tuple[list[Passage], list[Query]]:
    """Zipf-distributed documents; queries reuse doc ids as qids for some, to exercise removal."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(_WORDS))]
    passages = [
        Passage(f"d{i:04d}", " ".join(rng.choices(_WORDS, weights, k=rng.randint(3, 60))), title=rng.choice(_WORDS))
        for i in range(n_docs)
    ]
    queries = [
        Query(f"d{i:04d}", " ".join(rng.choices(_WORDS, weights, k=rng.randint(1, 6)))) for i in range(n_queries)
    ]
    return passages, queries


def assert_same_ranking(a: Run, b: Run, depth: int, tol: float = 1e-5) -> None:
    """Tie-tolerant equality of two runs' top-``depth`` lists.

    Score sequences must agree rank by rank within ``tol``; a document must sit in both
    lists unless its score is within ``tol`` of the cut (a near-tie at the cut may be
    resolved either way); and where the order differs, the swapped scores must be within
    ``tol`` of each other (documents among near-equal scores may swap).
    """
    assert a.keys() == b.keys()
    for qid in a:
        la, lb = list(a[qid].items())[:depth], list(b[qid].items())[:depth]
        assert len(la) == len(lb), qid
        for (da, sa), (db, sb) in zip(la, lb, strict=True):
            assert sa == pytest.approx(sb, abs=tol), qid
            if da != db:
                assert b[qid].get(da, -math.inf) == pytest.approx(sa, abs=tol) or sa <= la[-1][1] + tol, qid
        if la:
            cut = la[-1][1]
            assert {d for d, s in la if s > cut + tol} <= {d for d, _ in lb}, qid


def test_backends_agree_on_a_synthetic_collection() -> None:
    passages, queries = synthetic_collection(n_docs=400, n_queries=80, seed=7)
    runs = {name: BM25Index.build(passages, cfg(name)).search(queries, depth=10) for name in BACKENDS}
    assert_same_ranking(runs["bm25s"], runs["rank-bm25"], depth=10)
    # float64 scores and a shared tie-break: in practice the runs are identical
    for qid, hits in runs["bm25s"].items():
        assert list(hits) == list(runs["rank-bm25"][qid])
        assert hits == pytest.approx(runs["rank-bm25"][qid], abs=1e-6)


def test_backends_agree_on_the_embedded_collection() -> None:
    embedded = pytest.importorskip("resrank.data.embedded", reason="resrank.data.embedded not available yet")
    from resrank.errors import DataUnavailableError

    try:
        dataset = embedded.build_embedded("test")
    except DataUnavailableError as err:
        pytest.skip(f"embedded collection unavailable: {err}")
    assert dataset.corpus is not None
    passages = list(dataset.corpus.values())
    runs = {name: BM25Index.build(passages, cfg(name)).search(dataset.queries, depth=10) for name in BACKENDS}
    assert len(runs["bm25s"]) == len(dataset.queries)
    assert_same_ranking(runs["bm25s"], runs["rank-bm25"], depth=10)


# ------------------------------------------------------------------ run-level behaviour


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_id_hit_is_removed_and_depth_stays_full(backend: str) -> None:
    passages = [
        Passage("q1", "aspirin heart attack prevention"),
        *[Passage(f"d{i}", f"aspirin dose {i}") for i in range(6)],
    ]
    query = [Query("q1", "aspirin heart attack prevention")]
    kept = BM25Index.build(passages, cfg(backend, remove=False)).search(query, depth=3)
    assert next(iter(kept["q1"])) == "q1" and len(kept["q1"]) == 3
    removed = BM25Index.build(passages, cfg(backend, remove=True)).search(query, depth=3)
    assert "q1" not in removed["q1"] and len(removed["q1"]) == 3
    assert list(removed["q1"]) == [*list(kept["q1"].keys())[1:], list(removed["q1"])[-1]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_are_broken_by_docid_and_written_scores_strictly_decrease(backend: str, tmp_path) -> None:
    # forty identical documents in shuffled order: exactly equal scores, more ties than the
    # bm25s backend fetches beyond the cut (TIE_MARGIN), so the exact fallback must decide
    order = list(range(40))
    random.Random(0).shuffle(order)
    passages = [Passage(f"d{i:02d}", "vitamin d deficiency") for i in order]
    passages.append(Passage("x", "vitamin"))
    run = BM25Index.build(passages, cfg(backend)).search([Query("q", "vitamin deficiency")], depth=8)
    assert list(run["q"]) == [f"d{i:02d}" for i in range(8)]
    scores = list(run["q"].values())
    assert all(a > b for a, b in itertools.pairwise(scores))
    path = tmp_path / "run.trec"
    write_trec_run(path, run, "bm25")
    lines = path.read_text().splitlines()
    assert [line.split()[2] for line in lines] == [f"d{i:02d}" for i in range(8)]
    printed = [float(line.split()[4]) for line in lines]
    assert all(a > b for a, b in itertools.pairwise(printed))
    as_c_float = np.asarray(printed, dtype=np.float32)  # trec_eval keeps scores as C floats
    assert (np.diff(as_c_float) < 0).all()
    assert read_trec_run(path)["q"] == pytest.approx(run["q"], abs=1e-9)


def test_strictly_decreasing_nudges_only_ties() -> None:
    ranked = [("a", 2.0), ("b", 2.0), ("c", 2.0), ("d", 1.5), ("e", 1.4999999)]
    assert strictly_decreasing(ranked) == {"a": 2.0, "b": 1.999999, "c": 1.999998, "d": 1.5, "e": 1.499999}
    # at magnitude 20 a float32 step is ~1.9e-6: ties move further so float32 still separates them
    big = strictly_decreasing([(f"d{i}", 20.0) for i in range(50)])
    assert (np.diff(np.asarray(list(big.values()), dtype=np.float32)) < 0).all()
    assert min(big.values()) > 20.0 - 50 * 4e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_depth_queries_without_matches_and_boundary_ties(backend: str) -> None:
    passages, queries = synthetic_collection(n_docs=200, n_queries=20, seed=11)
    # many exact ties around any cut: duplicate each document's text under a second id
    passages = passages + [Passage(p.docid + "b", p.text, p.title) for p in passages]
    index = BM25Index.build(passages, cfg(backend))
    deep = index.search(queries, depth=100)
    shallow = index.search(queries, depth=5)
    for qid in deep:
        assert list(shallow[qid]) == list(deep[qid])[:5]  # the cut never changes the order above it
    none = index.search([Query("nothing", "zebra xylophone"), Query("stop", "the of and")], depth=5)
    assert none == {"nothing": {}, "stop": {}}


def test_bm25_retrieve_and_input_errors() -> None:
    corpus = {p.docid: p for p in TOY}
    run = bm25_retrieve(corpus, [Query("q", "bird")], cfg(depth=100))
    assert list(run["q"]) == ["d2"]
    with pytest.raises(ResRankError, match="unknown BM25 backend"):
        BM25Index.build(TOY, cfg(), backend="lucene")
    with pytest.raises(ResRankError, match="empty corpus"):
        BM25Index.build([], cfg())
    with pytest.raises(ResRankError, match="no indexable terms"):
        BM25Index.build([Passage("a", "the"), Passage("b", "")], cfg())
    with pytest.raises(ResRankError, match="duplicate document ids"):
        BM25Index.build([TOY[0], TOY[0]], cfg())
    with pytest.raises(ResRankError, match="duplicate query ids"):
        BM25Index.build(TOY, cfg()).search([Query("q", "a"), Query("q", "b")])


@pytest.mark.slow
def test_batched_numba_path_equals_exact_path() -> None:
    """bm25s's batched numba retrieval (with its tie fallback) returns the numpy path's runs."""
    pytest.importorskip("numba")
    passages, queries = synthetic_collection(n_docs=300, n_queries=40, seed=5)
    order = list(range(40))
    random.Random(1).shuffle(order)
    passages += [Passage(f"t{i:02d}", "vitamin d deficiency") for i in order]  # 40 exact ties
    queries.append(Query("ties", "vitamin deficiency"))
    exact = BM25Index.build(passages, cfg()).search(queries, depth=8)
    batched = BM25Index.build(passages, cfg(), bm25s_backend="numba", n_threads=2).search(queries, depth=8)
    assert list(batched["ties"]) == [f"t{i:02d}" for i in range(8)]  # needed the fallback
    for qid, hits in exact.items():
        assert list(batched[qid]) == list(hits)
        assert batched[qid] == pytest.approx(hits, abs=1e-6)
