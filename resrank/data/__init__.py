"""Data layer: plain data classes, readers/writers, dataset sources and the registry."""

from resrank.data.types import Candidate, CandidateList, Dataset, Passage, Qrels, Query, Run

__all__ = ["Candidate", "CandidateList", "Dataset", "Passage", "Qrels", "Query", "Run"]
