"""ResRank reproducibility suite: listwise reranking with one embedding per passage."""

__version__ = "0.1.0"
