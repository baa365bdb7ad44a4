"""The first stage of a prepared dataset: its own candidate list / published run, or BM25."""

from __future__ import annotations

from pathlib import Path

from resrank.config import RetrievalConfig
from resrank.data.prepared import read_prepared
from resrank.data.types import CandidateList, Run
from resrank.errors import ResRankError


def candidates_to_run(candidates: list[CandidateList], depth: int) -> Run:
    """Keep the given order (best first), with strictly decreasing scores for trec_eval."""
    run: Run = {}
    for clist in candidates:
        if not clist.candidates:
            raise ResRankError(f"query {clist.query.qid!r} has no candidates; drop it from the candidate file")
        ranked = clist.candidates[:depth]
        run[clist.query.qid] = {c.docid: float(len(ranked) - i) for i, c in enumerate(ranked)}
    return run


def first_stage_run(data_dir: Path, cfg: RetrievalConfig) -> Run:
    dataset = read_prepared(data_dir)
    if dataset.candidates is not None:
        return candidates_to_run(dataset.candidates, cfg.depth)
    if not dataset.corpus:
        raise ResRankError(f"{data_dir}: dataset has neither candidates nor a corpus to search")
    from resrank.retrieval.bm25 import bm25_retrieve

    return bm25_retrieve(dataset.corpus, dataset.queries, cfg)
