"""Benchmarks that measure the reproduction's systems (efficiency of compressed vs full-text reranking)."""
