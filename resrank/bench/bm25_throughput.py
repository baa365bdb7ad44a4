"""BM25 first-stage throughput: index time and queries/second of both BM25 backends.

For every dataset with a corpus and every backend (``bm25s`` and ``rank-bm25``, see
``resrank.retrieval.bm25``) one row with

* ``documents`` / ``queries``: the corpus and query-set sizes;
* ``analysis_s``: the analyzer alone over the corpus, once per dataset (part of
  ``index_s`` and shared by both backends, so the index-time difference is the backends'
  own);
* ``index_s``: analysis + index construction (``BM25Index.build``), one run;
* ``search_s`` / ``qps``: ``search`` over all queries at the retrieval depth (query
  analysis included), the fastest of ``repeats`` runs;
* ``ndcg@10``: a sanity figure (both backends compute the same scores, so it must agree);
* ``top10_agree``: the fraction of queries whose top-10 docids (in order) equal the
  reference backend's (rank-bm25, the independent cross-check); empty on the reference;
* ``qps_ratio`` (this backend's qps / the reference's) and ``index_speedup`` (the
  reference's ``index_s`` / this backend's): the bm25s vs rank-bm25 ratios.

Timings are single-threaded (bm25s's numpy selection path; numba only when asked) and
nothing is asserted about them. rank-bm25 scores every document per query term in Python,
so on corpora above ``rank_bm25_max_documents`` it is skipped (recorded, not silently).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from resrank.config import RetrievalConfig
from resrank.data.types import Dataset, Run
from resrank.errors import ResRankError

log = logging.getLogger(__name__)

COLUMNS = (
    "dataset",
    "backend",
    "documents",
    "queries",
    "analysis_s",
    "index_s",
    "search_s",
    "qps",
    "ndcg@10",
    "top10_agree",
    "qps_ratio",
    "index_speedup",
)
"""Table columns, in order (the CSV header of ``bm25_throughput.csv``)."""

REFERENCE = "rank-bm25"
"""The backend the ratios and the top-10 agreement are relative to."""

TOP = 10
STEM = "bm25_throughput"


def warm_up() -> None:
    """Import both backends and warm the analyzer, so one-off costs stay out of the first timing."""
    import bm25s  # noqa: F401
    import rank_bm25  # noqa: F401

    from resrank.retrieval.analyzer import LuceneEnglishAnalyzer

    LuceneEnglishAnalyzer()("warm-up: the regex engine's Unicode tables, Ünïcode αβ 中文 😀")


def ndcg10(run: Run, dataset: Dataset) -> float | None:
    """nDCG@10 of ``run`` (None when the run or the qrels give nothing to evaluate)."""
    from resrank.eval.metrics import evaluate

    try:
        return float(evaluate(run, dataset.qrels, ["ndcg@10"]).summary["ndcg@10"])
    except ResRankError as err:
        log.warning("%s: nDCG@10 not computed: %s", dataset.name, err)
        return None


def top_hits(run: Run, k: int = TOP) -> dict[str, list[str]]:
    """The top-``k`` docids of every query, best first (runs are stored best first)."""
    return {qid: sorted(hits, key=lambda d: (-hits[d], d))[:k] for qid, hits in run.items()}


def agreement(run: Run, reference: Run, k: int = TOP) -> float:
    """Fraction of the reference's queries whose top-``k`` docids equal the reference's, in order."""
    if not reference:
        return 1.0
    mine, theirs = top_hits(run, k), top_hits(reference, k)
    return sum(mine.get(q) == hits for q, hits in theirs.items()) / len(theirs)


def _analysis_seconds(dataset: Dataset) -> float:
    from resrank.retrieval.analyzer import LuceneEnglishAnalyzer

    assert dataset.corpus is not None
    start = time.perf_counter()
    LuceneEnglishAnalyzer().analyze_many(p.contents for p in dataset.corpus.values())
    return time.perf_counter() - start


def measure_backend(
    dataset: Dataset,
    backend: str,
    cfg: RetrievalConfig,
    repeats: int,
    *,
    n_threads: int = 0,
    bm25s_backend: Literal["numpy", "numba"] = "numpy",
) -> tuple[dict[str, Any], Run]:
    """Index ``dataset``'s corpus with ``backend`` and time ``repeats`` searches; the row and the run."""
    from resrank.retrieval.bm25 import BM25Index

    if dataset.corpus is None:
        raise ResRankError(f"{dataset.name}: no corpus to index")
    passages = list(dataset.corpus.values())
    start = time.perf_counter()
    index = BM25Index.build(passages, cfg, backend=backend, n_threads=n_threads, bm25s_backend=bm25s_backend)
    index_s = time.perf_counter() - start
    times: list[float] = []
    run: Run = {}
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run = index.search(dataset.queries)
        times.append(time.perf_counter() - start)
    search_s = min(times)
    row = {
        "dataset": dataset.name,
        "backend": backend,
        "documents": len(passages),
        "queries": len(dataset.queries),
        "index_s": round(index_s, 6),
        "search_s": round(search_s, 6),
        "search_runs_s": [round(t, 6) for t in times],
        "qps": round(len(dataset.queries) / search_s, 2) if search_s > 0 else None,
        "ndcg@10": ndcg10(run, dataset),
    }
    return row, run


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def measure_bm25_throughput(
    datasets: Iterable[Dataset],
    cfg: RetrievalConfig,
    repeats: int = 3,
    *,
    backends: Sequence[str] | None = None,
    n_threads: int = 0,
    bm25s_backend: Literal["numpy", "numba"] = "numpy",
    rank_bm25_max_documents: int | None = None,
    skipped: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (dataset, backend) with the columns of ``COLUMNS`` (plus ``depth`` and
    ``search_runs_s``), in the order given; ``cfg`` gives k1, b, depth and query-id removal
    (its ``backend`` is ignored). Datasets without a corpus, and rank-bm25 on corpora above
    ``rank_bm25_max_documents``, are skipped with the reason recorded in ``skipped``."""
    from resrank.retrieval.bm25 import BACKENDS

    backends = list(BACKENDS if backends is None else backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ResRankError(f"unknown BM25 backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    if repeats < 1:
        raise ResRankError(f"repeats must be >= 1, got {repeats}")
    skipped = {} if skipped is None else skipped
    warm_up()
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        if not dataset.corpus:
            skipped[dataset.name] = "no corpus (its first stage is a candidate file or a published run)"
            log.info("%s: skipped: %s", dataset.name, skipped[dataset.name])
            continue
        analysis_s = round(_analysis_seconds(dataset), 6)
        measured: dict[str, tuple[dict[str, Any], Run]] = {}
        for backend in backends:
            n_docs = len(dataset.corpus)
            if backend == "rank-bm25" and rank_bm25_max_documents is not None and n_docs > rank_bm25_max_documents:
                skipped[f"{dataset.name}/{backend}"] = (
                    f"{n_docs} documents > {rank_bm25_max_documents} (rank-bm25 scores every document per "
                    "query term in Python)"
                )
                log.info("%s: %s skipped: %s", dataset.name, backend, skipped[f"{dataset.name}/{backend}"])
                continue
            log.info("%s: measuring %s (%d documents, %d queries)", dataset.name, backend, n_docs, len(dataset.queries))
            measured[backend] = measure_backend(
                dataset, backend, cfg, repeats, n_threads=n_threads, bm25s_backend=bm25s_backend
            )
        ref_row, ref_run = measured.get(REFERENCE, (None, None))
        for backend, (row, run) in measured.items():
            is_ref = backend == REFERENCE
            row.update(
                analysis_s=analysis_s,
                depth=cfg.depth,
                top10_agree=None if ref_run is None or is_ref else round(agreement(run, ref_run), 4),
                qps_ratio=None if ref_row is None else _ratio(row["qps"], ref_row["qps"]),
                index_speedup=None if ref_row is None else _ratio(ref_row["index_s"], row["index_s"]),
            )
            rows.append({c: row[c] for c in COLUMNS} | {"depth": row["depth"], "search_runs_s": row["search_runs_s"]})
    return rows


def environment(n_threads: int = 0, bm25s_backend: str = "numpy") -> dict[str, Any]:
    """The machine facts a throughput figure needs beside it."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "n_threads": n_threads,
        "bm25s_backend": bm25s_backend,
    }


def collections(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rows grouped per dataset, with the bm25s / rank-bm25 ratios (the benchmark script's JSON layout)."""
    out: dict[str, Any] = {}
    for row in rows:
        entry = out.setdefault(row["dataset"], {"backends": {}})
        entry["backends"][row["backend"]] = row
    for entry in out.values():
        fast, slow = entry["backends"].get("bm25s"), entry["backends"].get("rank-bm25")
        if fast and slow:
            entry["qps_ratio_bm25s_over_rank_bm25"] = _ratio(fast["qps"], slow["qps"])
            entry["index_time_ratio_rank_bm25_over_bm25s"] = _ratio(slow["index_s"], fast["index_s"])
            entry["top10_agree"] = fast["top10_agree"]
    return out


def results_json(
    rows: Sequence[dict[str, Any]],
    settings: dict[str, Any],
    env: dict[str, Any] | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "settings": settings,
        "columns": list(COLUMNS),
        "rows": list(rows),
        "collections": collections(rows),
        "skipped": dict(skipped or {}),
        "environment": env if env is not None else environment(),
    }


def write_outputs(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    settings: dict[str, Any],
    *,
    skipped: dict[str, str] | None = None,
    env: dict[str, Any] | None = None,
    prov: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``bm25_throughput.{md,csv,tex}`` (with ``.provenance.json`` when ``prov``) and ``.json`` in ``out_dir``.

    An empty ``rows`` still writes the table (header only, with a note saying why): a
    profile whose datasets all come with candidate files has no BM25 to time."""
    from resrank.io import write_json
    from resrank.reports.format import write_table

    out_dir = Path(out_dir)
    skipped = dict(skipped or {})
    env = env if env is not None else environment()
    threads = "one thread" if env.get("n_threads", 0) in (0, 1) else f"{env['n_threads']} threads"
    repeats = settings.get("repeats")
    notes = [
        f"Depth {settings.get('depth')}, k1 {settings.get('k1')}, b {settings.get('b')}; {threads}; search_s is "
        f"the fastest of {repeats} pass{'' if repeats == 1 else 'es'} over all queries (query analysis included); "
        "index_s includes analysis_s (the analyzer alone, shared by both backends).",
        f"qps_ratio = qps / {REFERENCE}'s qps and index_speedup = {REFERENCE}'s index_s / index_s on the same "
        f"dataset; top10_agree = fraction of queries whose top-10 equals {REFERENCE}'s.",
    ]
    if not rows:
        notes.append("No dataset with a corpus in this profile: nothing to time.")
    if skipped:
        notes.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    paths = write_table(
        out_dir / STEM,
        list(COLUMNS),
        [[row[c] for c in COLUMNS] for row in rows],
        caption="BM25 first-stage throughput: index time and queries/second, bm25s vs rank-bm25 (same scores)",
        notes=notes,
        prov=prov,
    )
    json_path = out_dir / f"{STEM}.json"
    write_json(json_path, results_json(rows, settings, env, skipped) | ({"provenance": prov} if prov else {}))
    return {path.suffix.lstrip("."): path for path in paths} | {"json": json_path}


def throughput_settings(cfg: RetrievalConfig, repeats: int, **extra: Any) -> dict[str, Any]:
    """What the figures depend on (recorded in the JSON)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "backend"} | {"repeats": repeats} | extra
