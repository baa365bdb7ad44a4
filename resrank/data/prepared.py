"""The on-disk prepared-dataset layout shared by every DAG step (see docs/architecture.md).

``results/<profile>/data/<dataset>/`` holds queries.jsonl, qrels.txt, corpus.jsonl (when the
source has a corpus), candidates.jsonl (when the first stage is a precomputed file) and
manifest.json. The manifest is written last and removed first, so its presence marks a
complete, consistent folder; a manifest with ``"available": false`` records why a dataset
could not be prepared, so the workflow reports it instead of failing.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from resrank.data.registry import get_spec, load_dataset
from resrank.data.sources import read_beir_corpus
from resrank.data.types import Candidate, CandidateList, Dataset, Qrels, Query
from resrank.errors import DataUnavailableError, ResRankError
from resrank.io import iter_jsonl, read_json, read_trec_qrels, sha256_file, write_json, write_jsonl, write_trec_qrels

FORMAT = "resrank-prepared/1"
MANIFEST = "manifest.json"
QUERIES, QRELS, CORPUS, CANDIDATES = "queries.jsonl", "qrels.txt", "corpus.jsonl", "candidates.jsonl"
LAYOUT_FILES = (QUERIES, QRELS, CORPUS, CANDIDATES)
RERUN = "re-run `resrank data prepare`"


def write_prepared(dataset: Dataset, out_dir: str | Path, source: dict[str, Any] | str | None = None) -> None:
    """Write ``dataset`` in the prepared layout; validated before any file is touched.

    ``source`` (the registry spec or a description) is recorded in the manifest.
    """
    counts = _validate(dataset, require_qrels=_requires_qrels(source))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove(out / MANIFEST)  # from here until the new manifest exists the folder reads as incomplete
    written = [QUERIES, QRELS]
    write_jsonl(out / QUERIES, ({"qid": q.qid, "text": q.text} for q in dataset.queries))
    write_trec_qrels(out / QRELS, dataset.qrels)
    if dataset.corpus is not None:
        rows = ({"_id": p.docid, "title": p.title, "text": p.text} for p in dataset.corpus.values())
        write_jsonl(out / CORPUS, rows)
        written.append(CORPUS)
    if dataset.candidates is not None:
        write_jsonl(out / CANDIDATES, (_candidate_row(cl) for cl in dataset.candidates))
        written.append(CANDIDATES)
    for stale in set(LAYOUT_FILES) - set(written):
        _remove(out / stale)
    manifest = {
        "format": FORMAT,
        "name": dataset.name,
        "available": True,
        "source": source if source is not None else dataset.name,
        "counts": counts,
        "files": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in written},
    }
    write_json(out / MANIFEST, manifest)


def write_unavailable(out_dir: str | Path, name: str, reason: str, source: dict[str, Any] | None = None) -> None:
    """Record that ``name`` could not be prepared (and how to provide it); removes any old data files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove(out / MANIFEST)
    for stale in LAYOUT_FILES:
        _remove(out / stale)
    manifest: dict[str, Any] = {"format": FORMAT, "name": name, "available": False, "reason": reason}
    if source is not None:
        manifest["source"] = source
    write_json(out / MANIFEST, manifest)


def read_manifest(prepared_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder; its absence means an interrupted or missing preparation."""
    folder = Path(prepared_dir)
    path = folder / MANIFEST
    if not path.is_file():
        raise ResRankError(f"incomplete prepared data in {folder}; {RERUN}")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "available" not in manifest:
        raise ResRankError(f"{path}: not a {FORMAT} manifest; {RERUN}")
    return manifest


def read_prepared(prepared_dir: str | Path, verify: bool = True) -> Dataset:
    """Read a prepared folder back; refuses incomplete, unavailable or (with ``verify``) modified data."""
    folder = Path(prepared_dir)
    manifest = read_manifest(folder)
    name = str(manifest.get("name", folder.name))
    if not manifest["available"]:
        raise DataUnavailableError(f"dataset '{name}' was not prepared: {manifest.get('reason', '(no reason)')}")
    files: dict[str, Any] = manifest.get("files", {})
    for file_name in (QUERIES, QRELS):
        if file_name not in files:
            raise ResRankError(f"{folder / MANIFEST}: lists no {file_name}; {RERUN}")
    for file_name, info in files.items():
        path = folder / file_name
        if not path.is_file():
            raise ResRankError(f"incomplete prepared data in {folder} ({file_name} missing); {RERUN}")
        if verify and sha256_file(path) != info.get("sha256"):
            raise ResRankError(f"{path}: changed after preparation (sha256 differs from the manifest); {RERUN}")
    queries = [
        Query(qid=_field(obj, "qid", folder / QUERIES, lineno), text=_field(obj, "text", folder / QUERIES, lineno))
        for lineno, obj in iter_jsonl(folder / QUERIES)
    ]
    dataset = Dataset(
        name=name,
        queries=queries,
        qrels=read_trec_qrels(folder / QRELS) if (manifest.get("counts") or {}).get("judgements", 1) else {},
        corpus=read_beir_corpus(folder / CORPUS) if CORPUS in files else None,
        candidates=_read_candidates(folder / CANDIDATES) if CANDIDATES in files else None,
    )
    counts = _validate(dataset, require_qrels=_requires_qrels(manifest.get("source")))
    if counts != manifest.get("counts"):
        raise ResRankError(f"{folder / MANIFEST}: counts {manifest.get('counts')} do not match the files ({counts})")
    return dataset


def prepare_dataset(
    name: str,
    data_root: str | Path | None,
    out_dir: str | Path,
    extra_definitions: dict[str, Any] | None = None,
    max_queries: int | None = None,
) -> dict[str, Any]:
    """Load ``name`` and write its prepared folder; unavailable data yields an "available": false manifest.

    Malformed data and unknown names still raise :class:`ResRankError`: those are errors to fix,
    while missing data is a normal state of a machine without it. ``max_queries`` keeps a
    deterministic subset (the first queries by qid), recorded in the manifest's source.
    """
    spec = get_spec(name, extra_definitions)
    source = spec.to_dict()
    try:
        dataset = load_dataset(name, data_root, extra_definitions)
    except DataUnavailableError as err:
        write_unavailable(out_dir, name, str(err), source=source)
    else:
        if max_queries is not None and len(dataset.queries) > max_queries:
            dataset = subsample_queries(dataset, max_queries)
            source = {**source, "max_queries": max_queries}
        write_prepared(dataset, out_dir, source=source)
    return read_manifest(out_dir)


def subsample_queries(dataset: Dataset, max_queries: int) -> Dataset:
    """The first ``max_queries`` queries by qid, with their qrels and candidates (corpus unchanged)."""
    keep = {q.qid for q in sorted(dataset.queries, key=lambda q: q.qid)[:max_queries]}
    return Dataset(
        name=dataset.name,
        queries=[q for q in dataset.queries if q.qid in keep],
        qrels={qid: docs for qid, docs in dataset.qrels.items() if qid in keep},
        corpus=dataset.corpus,
        candidates=None if dataset.candidates is None else [c for c in dataset.candidates if c.query.qid in keep],
    )


def _requires_qrels(source: dict[str, Any] | str | None) -> bool:
    """Only training lists declared unjudged (teacher permutations: judged_only false) may lack qrels."""
    return not (isinstance(source, dict) and source.get("purpose") == "train" and source.get("judged_only") is False)


def _validate(dataset: Dataset, require_qrels: bool = True) -> dict[str, int]:
    """Refuse what no later step can use; return the manifest counts."""
    what = f"dataset '{dataset.name}'"
    if not dataset.queries:
        raise ResRankError(f"{what}: no queries to prepare (are any queries judged in the qrels?)")
    qids = [q.qid for q in dataset.queries]
    if len(set(qids)) != len(qids):
        raise ResRankError(f"{what}: duplicate query ids")
    empty = [q.qid for q in dataset.queries if not q.text.strip()]
    if empty:
        raise ResRankError(f"{what}: {len(empty)} query(ies) with empty text (e.g. {empty[0]!r})")
    if not dataset.qrels and require_qrels:
        raise ResRankError(
            f"{what}: no qrels; evaluation and qrels-labelled training need judgements "
            "(unjudged teacher lists: purpose train, judged_only false)"
        )
    if dataset.corpus is None and dataset.candidates is None:
        raise ResRankError(f"{what}: neither a corpus nor candidates; nothing to rank")
    counts = {
        "queries": len(qids),
        "qrels_queries": len(dataset.qrels),
        "judgements": sum(len(docs) for docs in dataset.qrels.values()),
    }
    if dataset.corpus is not None:
        if not dataset.corpus:
            raise ResRankError(f"{what}: the corpus is empty")
        counts["corpus"] = len(dataset.corpus)
    if dataset.candidates is not None:
        by_qid = {cl.query.qid: cl for cl in dataset.candidates}
        if len(by_qid) != len(dataset.candidates) or set(by_qid) != set(qids):
            raise ResRankError(f"{what}: candidate lists must cover exactly the queries, one list per query")
        for cl in dataset.candidates:
            if not cl.candidates:
                raise ResRankError(f"{what}: query {cl.query.qid!r} has an empty candidate list")
            bad = [c.docid for c in cl.candidates if not math.isfinite(c.score)]
            if bad:
                raise ResRankError(f"{what}: query {cl.query.qid!r} has non-finite candidate scores (e.g. {bad[0]!r})")
        counts["candidate_lists"] = len(dataset.candidates)
        counts["candidates"] = sum(len(cl.candidates) for cl in dataset.candidates)
    return counts


def _candidate_row(cl: CandidateList) -> dict[str, Any]:
    hits = [{"docid": c.docid, "score": c.score, "title": c.title, "text": c.text} for c in cl.candidates]
    return {"qid": cl.query.qid, "query": cl.query.text, "hits": hits}


def _read_candidates(path: Path) -> list[CandidateList]:
    lists: list[CandidateList] = []
    for lineno, obj in iter_jsonl(path):
        hits = obj.get("hits")
        if not isinstance(hits, list):
            raise ResRankError(f"{path}:{lineno}: 'hits' must be a list")
        candidates = []
        for hit in hits:
            if not isinstance(hit, dict) or not isinstance(hit.get("score"), (int, float)):
                raise ResRankError(f"{path}:{lineno}: each hit needs docid, score, title, text")
            try:
                score = float(hit["score"])
            except OverflowError:  # an integer beyond the float range
                raise ResRankError(f"{path}:{lineno}: a hit's score is beyond the float range; {RERUN}") from None
            candidates.append(
                Candidate(
                    docid=_field(hit, "docid", path, lineno),
                    score=score,
                    text=_field(hit, "text", path, lineno),
                    title=_field(hit, "title", path, lineno),
                )
            )
        query = Query(qid=_field(obj, "qid", path, lineno), text=_field(obj, "query", path, lineno))
        lists.append(CandidateList(query=query, candidates=candidates))
    return lists


def _field(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ResRankError(f"{path}:{lineno}: '{key}' must be a string (missing or {type(value).__name__})")
    return value


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_prepared_qrels(prepared_dir: str | Path) -> Qrels:
    """Only the qrels of a prepared folder (evaluation needs nothing else), checked against the manifest."""
    folder = Path(prepared_dir)
    manifest = read_manifest(folder)
    if not manifest["available"]:
        raise DataUnavailableError(f"dataset '{manifest.get('name')}' was not prepared: {manifest.get('reason')}")
    path = folder / QRELS
    info = manifest.get("files", {}).get(QRELS, {})
    if not path.is_file() or sha256_file(path) != info.get("sha256"):
        raise ResRankError(f"{path}: missing or changed after preparation; {RERUN}")
    return read_trec_qrels(path)
