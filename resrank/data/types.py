"""Plain data classes shared by every stage (in the spirit of rank_llm's Request/Result).

Identifiers are always strings (ints in RankGPT JSON are converted at the reader).
Runs and qrels are plain nested dicts so they pass straight into ranx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Qrels = dict[str, dict[str, int]]
"""qid -> docid -> graded relevance (TREC qrels)."""

Run = dict[str, dict[str, float]]
"""qid -> docid -> score (higher is better)."""


@dataclass(frozen=True)
class Query:
    qid: str
    text: str


@dataclass(frozen=True)
class Passage:
    docid: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        """Title and text as one field, as Pyserini indexes BEIR ("title + text")."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass
class Candidate:
    """One first-stage hit of a query, with its passage text when known."""

    docid: str
    score: float
    text: str = ""
    title: str = ""

    @property
    def contents(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass
class CandidateList:
    """A query with its ranked candidates (best first): the unit a reranker consumes."""

    query: Query
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class Dataset:
    """Everything one evaluation or training set provides.

    ``corpus`` is None when only a candidate file is available (e.g. DL19 top-100 with
    texts); ``candidates`` is None when the first stage must be computed (BM25 / dense).
    """

    name: str
    queries: list[Query]
    qrels: Qrels
    corpus: dict[str, Passage] | None = None
    candidates: list[CandidateList] | None = None
