"""BM25 as Lucene's ``BM25Similarity`` scores it, so our candidates match Pyserini's.

Per query term t (repeated query terms count repeatedly: Anserini's bag-of-words query
boosts a term clause by its count) and document d of analyzed length dl::

    idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))          # never negative
    score(t, d) = idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))

Lucene >= 8 drops the classic ``(k1 + 1)`` numerator factor: rank-equivalent, and the
form scores are printed in. N is Lucene's ``docCount`` (documents with at least one
indexed term) and ``avgdl = sumTotalTermFreq / docCount``.

Document lengths: Lucene stores dl in a one-byte norm (``SmallFloat.intToByte4``), exact
up to 23 terms and then keeping 4 significant bits, and scores with the *decoded* length.
That quantisation is part of what Pyserini's published figures measure, so it is on by
default (``lossy_norms=True``); ``lossy_norms=False`` gives the exact-length formula
(bm25s's ``method="lucene"``, Kamphuis et al. 2020's "Lucene (accurate)").

Two backends compute the same scores (float64): ``bm25s`` (default; sparse precomputed
score matrix, fast batched retrieval) and ``rank-bm25`` (``BM25Okapi`` with Lucene's IDF,
an independent cross-check). A hit whose docid equals the query id is dropped (BEIR sets
such as ArguAna contain the query as a document; Pyserini's ``--remove-query``), ties
are broken by docid ascending and printed scores are made strictly decreasing (see
``resrank.retrieval.ranking``). Only documents sharing a term with the query are
returned, as Lucene does, so a run may hold fewer than ``depth`` hits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from resrank.config import RetrievalConfig
from resrank.data.types import Passage, Query, Run
from resrank.errors import ResRankError
from resrank.retrieval.analyzer import LuceneEnglishAnalyzer
from resrank.retrieval.ranking import TIE_DECIMALS, finalize_hits

__all__ = ["BACKENDS", "BM25Index", "bm25_retrieve", "lucene_idf", "lucene_norm_length"]

Backend = Literal["bm25s", "rank-bm25"]
BACKENDS: tuple[str, ...] = ("bm25s", "rank-bm25")

TIE_MARGIN = 16
"""Extra hits the batched (numba) bm25s path fetches beyond the cut, to see ties at the cut."""


# ----------------------------------------------------------------------------------------
# Lucene's formula pieces.


def lucene_idf(df: np.ndarray | float, n_docs: int) -> np.ndarray | float:
    """Lucene's BM25 IDF: ln(1 + (N - df + 0.5) / (df + 0.5))."""
    return np.log1p((n_docs - np.asarray(df, dtype=np.float64) + 0.5) / (np.asarray(df, dtype=np.float64) + 0.5))


def _int4_to_long(i: np.ndarray) -> np.ndarray:
    bits = i & 0x07
    shift = (i >> 3) - 1
    return np.where(shift == -1, bits, (bits | 0x08) << np.maximum(shift, 0))


def _long_to_int4(i: np.ndarray) -> np.ndarray:
    num_bits = np.frexp(i.astype(np.float64))[1].astype(np.int64)  # bit length (exact below 2**53)
    shift = np.maximum(num_bits - 4, 0)
    encoded = ((i >> shift) & 0x07) | ((shift + 1) << 3)
    return np.where(num_bits < 4, i, encoded)


_NUM_FREE_VALUES = 255 - int(_long_to_int4(np.array([2**31 - 1], dtype=np.int64))[0])  # = 24


def lucene_norm_length(length: np.ndarray | int) -> np.ndarray:
    """Document length as Lucene's BM25 sees it: ``byte4ToInt(intToByte4(length))``.

    Exact below 24 terms; beyond, ``24 + (length - 24)`` keeps its 4 leading bits
    (e.g. 100 -> 96, 1000 -> 984).
    """
    n = np.asarray(length, dtype=np.int64)
    if (n < 0).any():
        raise ValueError("document lengths must be non-negative")
    rest = np.maximum(n - _NUM_FREE_VALUES, 0)
    decoded = _NUM_FREE_VALUES + _int4_to_long(_long_to_int4(rest))
    return np.where(n < _NUM_FREE_VALUES, n, decoded)


# ----------------------------------------------------------------------------------------
# Backends: both receive analyzed documents and return float64 score vectors / top-k.


class _Stats:
    """Collection statistics in Lucene's sense (empty documents are not counted)."""

    def __init__(self, lengths: np.ndarray, lossy_norms: bool) -> None:
        self.lengths = lengths
        self.n_docs = int((lengths > 0).sum())
        if self.n_docs == 0:
            raise ResRankError("BM25: the corpus has no indexable terms (every document is empty after analysis)")
        self.avgdl = float(lengths.sum()) / self.n_docs
        self.norm_lengths = (lucene_norm_length(lengths) if lossy_norms else lengths).astype(np.float64)


def _make_bm25s_backend(docs: list[list[str]], k1: float, b: float, lossy_norms: bool, **options: Any) -> Any:
    import bm25s
    from bm25s.tokenization import Tokenized

    class LuceneBM25S(bm25s.BM25):
        """bm25s index whose precomputed scores use Lucene's docCount, avgdl and length norms.

        bm25s's documented extension point (``build_index_from_ids``) is overridden; search,
        storage and the batched top-k are bm25s's own.
        """

        def __init__(self, lossy_norms: bool, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.lossy_norms = lossy_norms

        def build_index_from_ids(
            self, unique_token_ids: list[int], corpus_token_ids: list[list[int]], **_: Any
        ) -> dict[str, Any]:
            n_vocab = len(unique_token_ids)
            lengths = np.fromiter((len(d) for d in corpus_token_ids), dtype=np.int64, count=len(corpus_token_ids))
            stats = _Stats(lengths, self.lossy_norms)
            flat = np.fromiter((t for d in corpus_token_ids for t in d), dtype=np.int64, count=int(lengths.sum()))
            doc_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
            pairs, tf = np.unique(flat * len(lengths) + doc_of, return_counts=True)  # sorted by (term, doc)
            term, doc = np.divmod(pairs, len(lengths))
            df = np.bincount(term, minlength=n_vocab)
            idf = lucene_idf(df, stats.n_docs)
            tf = tf.astype(np.float64)
            norm = self.k1 * (1.0 - self.b + self.b * stats.norm_lengths[doc] / stats.avgdl)
            data = (idf[term] * tf / (tf + norm)).astype(self.dtype)
            indptr = np.concatenate([[0], np.cumsum(df)]).astype(self.int_dtype)
            self.nonoccurrence_array = None
            self.lucene_stats = stats
            return {"data": data, "indices": doc.astype(self.int_dtype), "indptr": indptr, "num_docs": len(lengths)}

    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(term, len(vocab)) for term in doc] for doc in docs]
    model = LuceneBM25S(
        lossy_norms=lossy_norms,
        k1=k1,
        b=b,
        method="lucene",
        dtype=options.get("dtype", "float64"),
        int_dtype="int64",
        backend=options.get("bm25s_backend", "numpy"),
    )
    model.index(Tokenized(ids=ids, vocab=vocab), create_empty_token=False, show_progress=False)
    return _Bm25sBackend(model, n_threads=options.get("n_threads", 0))


class _Bm25sBackend:
    """Scores with bm25s's sparse kernel; two ways to select the top k.

    * numpy (default): per query, bm25s's ``get_scores_from_ids`` and an exact top-k over
      the matching documents only. Faster than bm25s's own numpy ``retrieve`` (whose
      ``argpartition`` over a mostly-zero vector is slow) and exact for ties.
    * numba: bm25s's batched, multi-threaded ``retrieve`` (``n_threads``), the fast path
      for large corpora and query sets (a one-off ~10 s JIT compile). It fetches
      TIE_MARGIN hits beyond the cut and falls back to full scores for a query whose
      tie at the cut may extend past what was fetched.
    """

    def __init__(self, model: Any, n_threads: int) -> None:
        self.model = model
        self.n_threads = n_threads
        self.n_docs = int(model.scores["num_docs"])
        self.batched = model.backend == "numba"

    def _ids(self, terms: list[str]) -> list[int]:
        return self.model.get_tokens_ids(terms)

    def _scores_from_ids(self, ids: list[int]) -> np.ndarray:
        if not ids:
            return np.zeros(self.n_docs)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float64)

    def scores(self, terms: list[str]) -> np.ndarray:
        return self._scores_from_ids(self._ids(terms))

    def top_k(self, queries: list[list[str]], k: int) -> list[list[tuple[int, float]]]:
        ids_per_query = [self._ids(q) for q in queries]
        if not self.batched:
            return [_top_from_scores(self._scores_from_ids(ids), k) if ids else [] for ids in ids_per_query]
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
        live = [(i, ids) for i, ids in enumerate(ids_per_query) if ids]
        if not live:
            return out
        k_fetch = min(self.n_docs, k + TIE_MARGIN)
        result = self.model.retrieve([ids for _, ids in live], k=k_fetch, show_progress=False, n_threads=self.n_threads)
        for (i, ids), docs, scores in zip(live, result.documents, result.scores, strict=True):
            hits = [(int(d), float(s)) for d, s in zip(docs, scores, strict=True) if s > 0]
            if len(hits) == k_fetch < self.n_docs and _tie_may_cross(hits, k):
                hits = _top_from_scores(self._scores_from_ids(ids), k)
            out[i] = hits
        return out


def _make_rank_bm25_backend(docs: list[list[str]], k1: float, b: float, lossy_norms: bool, **_: Any) -> Any:
    from rank_bm25 import BM25Okapi

    class LuceneOkapi(BM25Okapi):
        """rank-bm25's Okapi BM25 with Lucene's IDF, docCount, avgdl and length norms.

        rank-bm25's own ``get_scores`` still does the scoring (with its ``(k1 + 1)``
        factor, divided out in the backend), so it stays an independent check of bm25s.
        """

        def _calc_idf(self, nd: dict[str, int]) -> None:
            stats = _Stats(np.asarray(self.doc_len, dtype=np.int64), lossy_norms)
            self.lucene_stats = stats
            self.corpus_size = len(self.doc_len)
            self.avgdl = stats.avgdl
            self.doc_len = stats.norm_lengths
            self.idf = {word: math.log1p((stats.n_docs - df + 0.5) / (df + 0.5)) for word, df in nd.items()}

    return _RankBM25Backend(LuceneOkapi(docs, k1=k1, b=b), k1)


class _RankBM25Backend:
    def __init__(self, model: Any, k1: float) -> None:
        self.model = model
        self.k1 = k1
        self.n_docs = int(model.corpus_size)

    def scores(self, terms: list[str]) -> np.ndarray:
        return np.asarray(self.model.get_scores(terms), dtype=np.float64) / (self.k1 + 1.0)

    def top_k(self, queries: list[list[str]], k: int) -> list[list[tuple[int, float]]]:
        return [_top_from_scores(self.scores(q), k) if q else [] for q in queries]


def _tie_may_cross(hits: list[tuple[int, float]], k: int) -> bool:
    """True when the k-th best score equals the last fetched one (more ties may lie beyond)."""
    rounded = sorted((round(s, TIE_DECIMALS) for _, s in hits), reverse=True)
    return rounded[min(k, len(rounded)) - 1] <= rounded[-1]


def _top_from_scores(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """All positive-score documents scoring at least the k-th best (ties at the cut kept)."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        kth = np.partition(scores[positive], len(positive) - k)[len(positive) - k]
        positive = positive[np.round(scores[positive], TIE_DECIMALS) >= round(float(kth), TIE_DECIMALS)]
    return [(int(i), float(scores[i])) for i in positive]


_FACTORIES = {"bm25s": _make_bm25s_backend, "rank-bm25": _make_rank_bm25_backend}


# ----------------------------------------------------------------------------------------


class BM25Index:
    """A BM25 index over passages (``title + "\\n" + text``), searched with Lucene's scoring."""

    def __init__(
        self,
        docids: list[str],
        backend: Any,
        backend_name: str,
        cfg: RetrievalConfig,
        analyzer: LuceneEnglishAnalyzer,
    ) -> None:
        self.docids = docids
        self.backend_name = backend_name
        self.cfg = cfg
        self.analyzer = analyzer
        self._backend = backend

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        cfg: RetrievalConfig,
        *,
        backend: str | None = None,
        analyzer: LuceneEnglishAnalyzer | None = None,
        lossy_norms: bool = True,
        n_threads: int = 0,
        bm25s_backend: Literal["numpy", "numba"] = "numpy",
        dtype: Literal["float64", "float32"] = "float64",
    ) -> BM25Index:
        """Analyze and index ``passages``; ``backend`` overrides ``cfg.backend``.

        bm25s only: ``bm25s_backend="numba"`` selects bm25s's batched retrieval with
        ``n_threads`` threads (-1: all cores), worth its JIT compile on large query sets;
        ``dtype="float32"`` halves memory on MS MARCO-size corpora at ~1e-6 score precision.
        """
        name = backend or cfg.backend
        if name not in _FACTORIES:
            raise ResRankError(f"retrieval.backend: unknown BM25 backend {name!r}; choose one of {', '.join(BACKENDS)}")
        if not passages:
            raise ResRankError("BM25: cannot index an empty corpus")
        docids = [p.docid for p in passages]
        if len(set(docids)) != len(docids):
            raise ResRankError("BM25: duplicate document ids in the corpus")
        analyzer = analyzer or LuceneEnglishAnalyzer()
        docs = analyzer.analyze_many(p.contents for p in passages)
        if n_threads < 0:
            n_threads = os.cpu_count() or 1
        impl = _FACTORIES[name](
            docs, cfg.k1, cfg.b, lossy_norms, n_threads=n_threads, bm25s_backend=bm25s_backend, dtype=dtype
        )
        return cls(docids, impl, name, cfg, analyzer)

    @property
    def n_docs(self) -> int:
        return len(self.docids)

    def scores(self, text: str) -> dict[str, float]:
        """BM25 score of every document sharing a term with ``text`` (for checks and analysis)."""
        values = self._backend.scores(self.analyzer(text))
        return {self.docids[i]: float(values[i]) for i in np.flatnonzero(values > 0)}

    def search(
        self,
        queries: Sequence[Query],
        depth: int | None = None,
        remove_query_id_hits: bool | None = None,
    ) -> Run:
        """Top-``depth`` documents per query (default ``cfg.depth``), best first.

        Every query gets an entry, empty when it shares no term with the corpus.
        """
        depth = self.cfg.depth if depth is None else depth
        if depth < 1:
            raise ResRankError(f"BM25: depth must be >= 1, got {depth}")
        remove = self.cfg.remove_query_id_hits if remove_query_id_hits is None else remove_query_id_hits
        qids = [q.qid for q in queries]
        if len(set(qids)) != len(qids):
            raise ResRankError("BM25: duplicate query ids")
        terms = [self.analyzer(q.text) for q in queries]
        k = min(self.n_docs, depth + (1 if remove else 0))
        run: Run = {}
        for query, hits in zip(queries, self._backend.top_k(terms, k), strict=True):
            named = ((self.docids[i], score) for i, score in hits)
            run[query.qid] = finalize_hits(named, depth, exclude=query.qid if remove else None)
        return run


def bm25_retrieve(
    corpus: dict[str, Passage],
    queries: list[Query],
    cfg: RetrievalConfig,
    *,
    depth: int | None = None,
    **options: Any,
) -> Run:
    """Index ``corpus`` and return the BM25 run of ``queries`` (``options`` go to ``BM25Index.build``)."""
    index = BM25Index.build(list(corpus.values()), cfg, **options)
    return index.search(queries, depth=depth)
