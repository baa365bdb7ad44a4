"""Readers turning the field's dataset formats into one :class:`~resrank.data.types.Dataset`.

Four sources: BEIR folders, TREC topics/qrels (+ optional run as first stage), RankGPT /
rank_llm "retrieve_results" JSON, and ir_datasets ids. Every reader refuses malformed input
with a :class:`ResRankError` naming the file and line (or entry index) and raises
:class:`DataUnavailableError` when the data cannot be reached, so the workflow can report
"not run: data unavailable" instead of failing.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import urllib.error
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from resrank.data.types import Candidate, CandidateList, Dataset, Passage, Qrels, Query, Run
from resrank.errors import DataUnavailableError, ResRankError
from resrank.io import iter_jsonl, iter_lines, read_json, read_trec_qrels, read_trec_run

OFFLINE_ENV_VARS = ("RESRANK_OFFLINE", "HF_HUB_OFFLINE")
"""Any of these set to 1/true/yes makes :func:`load_ir_datasets` refuse downloads up front."""


# --------------------------------------------------------------------------- BEIR folders


def read_beir_corpus(path: str | Path) -> dict[str, Passage]:
    """Read a BEIR ``corpus.jsonl`` (``_id``, ``text``, optional ``title``)."""
    corpus: dict[str, Passage] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        docid = _id_field(obj, "_id", path, lineno)
        text = _str_field(obj, "text", path, lineno)
        title = _str_field(obj, "title", path, lineno, required=False)
        if docid in corpus:
            raise ResRankError(
                f"{path}:{lineno}: duplicate document id {docid!r} (first seen on line {first_line[docid]}); "
                "document ids must be unique: remove or rename the duplicate"
            )
        corpus[docid] = Passage(docid=docid, text=text, title=title)
        first_line[docid] = lineno
    if not corpus:
        raise ResRankError(f"{path}: the corpus is empty; check that the file is a complete BEIR corpus.jsonl")
    return corpus


def read_beir_queries(path: str | Path) -> dict[str, tuple[int, str]]:
    """Read a BEIR ``queries.jsonl`` into ``qid -> (line, text)`` (line kept for later error messages)."""
    queries: dict[str, tuple[int, str]] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _id_field(obj, "_id", path, lineno)
        text = _str_field(obj, "text", path, lineno)
        if qid in queries:
            raise ResRankError(
                f"{path}:{lineno}: duplicate query id {qid!r} (first seen on line {queries[qid][0]}); "
                "query ids must be unique"
            )
        queries[qid] = (lineno, text)
    return queries


def load_beir(folder: str | Path, split: str = "test", name: str | None = None) -> Dataset:
    """Load a BEIR folder; like BEIR's loader, keep only the queries judged in ``qrels/<split>.tsv``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataUnavailableError(
            f"BEIR folder {folder} does not exist; download and unzip the BEIR dataset there "
            "(it must hold corpus.jsonl, queries.jsonl and qrels/<split>.tsv)"
        )
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / required).is_file():
            raise ResRankError(f"BEIR folder {folder} lacks {required}; re-download or re-extract the dataset")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise ResRankError(
            f"BEIR folder {folder} has no qrels for split '{split}' ({qrels_path} missing); "
            f"splits present: {', '.join(splits) or '(none)'}"
        )
    qrels = read_trec_qrels(qrels_path)
    all_queries = read_beir_queries(folder / "queries.jsonl")
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise ResRankError(
            f"{qrels_path}: {len(missing)} judged query id(s) absent from {folder / 'queries.jsonl'} "
            f"(e.g. {', '.join(repr(q) for q in missing[:5])}); the folder's files do not belong together"
        )
    queries: list[Query] = []
    for qid, (lineno, text) in all_queries.items():
        if qid not in qrels:
            continue
        if not text.strip():
            raise ResRankError(f"{folder / 'queries.jsonl'}:{lineno}: query {qid!r} has empty text; fix the file")
        queries.append(Query(qid=qid, text=text))
    corpus = read_beir_corpus(folder / "corpus.jsonl")
    return Dataset(name=name or folder.name, queries=queries, qrels=qrels, corpus=corpus)


# --------------------------------------------------------------------------- TREC files


def read_trec_topics(path: str | Path) -> list[Query]:
    """Read ``qid<TAB>text`` topics (optionally ``.gz``); the text may itself contain tabs."""
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        qid = qid.strip()
        if not sep or not qid:
            raise ResRankError(f"{path}:{lineno}: malformed topic line (expected 'qid<TAB>text'): {line[:80]!r}")
        if not text.strip():
            raise ResRankError(f"{path}:{lineno}: topic {qid!r} has empty text; fix the topics file")
        if qid in seen:
            raise ResRankError(f"{path}:{lineno}: duplicate topic id {qid!r} (first seen on line {seen[qid]})")
        seen[qid] = lineno
        queries.append(Query(qid=qid, text=text.strip()))
    if not queries:
        raise ResRankError(f"{path}: the topics file is empty")
    return queries


def load_trec(
    topics: str | Path,
    qrels: str | Path,
    *,
    run: str | Path | None = None,
    corpus: str | Path | None = None,
    name: str = "trec",
    judged_only: bool = True,
) -> Dataset:
    """TREC topics + qrels; a run becomes the candidates (texts from ``corpus`` when given).

    ``corpus`` is a BEIR folder or a ``corpus.jsonl``. Without a corpus the candidates carry no
    text: enough to score the run, not to rerank it.
    """
    queries = read_trec_topics(topics)
    judgements = read_trec_qrels(qrels)
    if judged_only:
        queries = [q for q in queries if q.qid in judgements]
        if not queries:
            raise ResRankError(f"{qrels}: no topic of {topics} is judged; do the files belong to the same collection?")
    passages = None
    if corpus is not None:
        corpus = Path(corpus)
        passages = read_beir_corpus(corpus / "corpus.jsonl" if corpus.is_dir() else corpus)
    candidates = None
    if run is not None:
        candidates = candidates_from_run(read_trec_run(run), queries, passages, source=str(run))
    return Dataset(name=name, queries=queries, qrels=judgements, corpus=passages, candidates=candidates)


def candidates_from_run(
    run: Run, queries: list[Query], corpus: dict[str, Passage] | None, source: str = "run"
) -> list[CandidateList]:
    """Rank each query's run entries best first (ties by docid, as trec_eval) and attach texts."""
    lists: list[CandidateList] = []
    without = [q.qid for q in queries if not run.get(q.qid)]
    if without:
        raise ResRankError(
            f"{source}: no candidates for {len(without)} judged topic(s) (e.g. {', '.join(without[:5])}); "
            "the run and the topics do not belong together"
        )
    for query in queries:
        ranked = sorted(run[query.qid].items(), key=lambda item: (-item[1], item[0]))
        hits: list[Candidate] = []
        for docid, score in ranked:
            if corpus is None:
                hits.append(Candidate(docid=docid, score=score))
                continue
            passage = corpus.get(docid)
            if passage is None:
                raise ResRankError(
                    f"{source}: query {query.qid!r} retrieves document {docid!r}, which the corpus lacks; "
                    "the run was made on a different corpus"
                )
            hits.append(Candidate(docid=docid, score=score, text=passage.text, title=passage.title))
        lists.append(CandidateList(query=query, candidates=hits))
    return lists


# --------------------------------------------------------------------------- RankGPT / rank_llm JSON


def read_retrieve_results(path: str | Path) -> list[CandidateList]:
    """Read RankGPT / rank_llm ``[{"query", "hits": [{"content","qid","docid","rank","score"}]}]``.

    ``qid``/``docid`` may be ints (rank_llm writes DL qids as ints) and become strings; hits are
    ordered by ``rank`` when given. ``content`` is kept verbatim (it may read "Title: ... Content: ...").
    A ``.jsonl`` file holds the same entries one per line (rank_llm / RankZephyr training lists).
    """
    if str(path).endswith(".jsonl"):
        data: Any = [obj for _, obj in iter_jsonl(path)]
    else:
        data = read_json(path)
    if not isinstance(data, list):
        raise ResRankError(f'{path}: expected a JSON list of {{"query", "hits"}} entries, got {type(data).__name__}')
    lists: list[CandidateList] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise ResRankError(f"{where}: expected an object with 'query' and 'hits', got {type(entry).__name__}")
        text = entry.get("query")
        if not isinstance(text, str):
            raise ResRankError(f"{where}: 'query' must be a string (missing or {type(text).__name__})")
        if not text.strip():
            raise ResRankError(f"{where}: 'query' is empty")
        hits = entry.get("hits")
        if not isinstance(hits, list) or not hits:
            raise ResRankError(f"{where}: 'hits' must be a non-empty list (its qid cannot be known otherwise)")
        qid, candidates = _parse_hits(hits, where)
        if qid in seen:
            raise ResRankError(f"{where}: query id {qid!r} already appeared in entry {seen[qid]}")
        seen[qid] = index
        lists.append(CandidateList(query=Query(qid=qid, text=text), candidates=candidates))
    if not lists:
        raise ResRankError(f"{path}: the file holds no entries")
    return lists


def _parse_hits(hits: list[Any], where: str) -> tuple[str, list[Candidate]]:
    qid: str | None = None
    ranked: list[tuple[int, int, Candidate]] = []
    docids: set[str] = set()
    for pos, hit in enumerate(hits):
        at = f"{where} hit {pos}"
        if not isinstance(hit, dict):
            raise ResRankError(f"{at}: expected an object, got {type(hit).__name__}")
        for key in ("content", "qid", "docid", "score"):
            if key not in hit:
                raise ResRankError(f"{at}: missing key '{key}' (needs content, qid, docid, rank, score)")
        hit_qid = _as_id(hit["qid"], f"{at}: 'qid'")
        if qid is None:
            qid = hit_qid
        elif hit_qid != qid:
            raise ResRankError(f"{at}: qid {hit_qid!r} differs from the entry's first hit ({qid!r})")
        docid = _as_id(hit["docid"], f"{at}: 'docid'")
        if docid in docids:
            raise ResRankError(f"{at}: duplicate docid {docid!r} in the same entry")
        docids.add(docid)
        if not isinstance(hit["content"], str):
            raise ResRankError(f"{at}: 'content' must be a string")
        score = hit["score"]
        try:
            finite = not isinstance(score, bool) and isinstance(score, (int, float)) and math.isfinite(score)
        except OverflowError:  # an integer beyond the float range
            finite = False
        if not finite:
            raise ResRankError(f"{at}: 'score' must be a finite number, got {score!r}")
        rank = hit.get("rank", pos + 1)
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise ResRankError(f"{at}: 'rank' must be an integer, got {rank!r}")
        ranked.append((rank, pos, Candidate(docid=docid, score=float(score), text=hit["content"])))
    assert qid is not None  # hits is non-empty
    ranked.sort(key=lambda item: (item[0], item[1]))
    return qid, [candidate for _, _, candidate in ranked]


def load_retrieve_results(
    path: str | Path, qrels: str | Path | None, *, name: str = "retrieve_results", judged_only: bool = True
) -> Dataset:
    """Candidates (with texts) from a retrieve_results JSON plus qrels from a separate TREC file.

    ``qrels=None`` (with ``judged_only=False``) reads unjudged lists such as teacher permutations.
    """
    lists = read_retrieve_results(path)
    judgements = read_trec_qrels(qrels) if qrels is not None else {}
    return _with_candidates(Dataset(name=name, queries=[], qrels=judgements), lists, str(path), judged_only)


def attach_candidates(dataset: Dataset, path: str | Path, judged_only: bool = True) -> Dataset:
    """Use a user-supplied retrieve_results file as the first stage of ``dataset``.

    Queries (ids and texts) come from the file; ``dataset.qrels`` judges them.
    """
    return _with_candidates(dataset, read_retrieve_results(path), str(path), judged_only)


def _with_candidates(dataset: Dataset, lists: list[CandidateList], source: str, judged_only: bool) -> Dataset:
    if judged_only:
        lists = [cl for cl in lists if cl.query.qid in dataset.qrels]
        if not lists:
            raise ResRankError(f"{source}: none of its queries is judged in the qrels; do the files belong together?")
    return Dataset(
        name=dataset.name,
        queries=[cl.query for cl in lists],
        qrels=dataset.qrels,
        corpus=dataset.corpus,
        candidates=lists,
    )


# --------------------------------------------------------------------------- ir_datasets


class _DownloadRefused(ConnectionError):
    """Raised in place of a network request when offline mode is on."""


_IRDS_HOME_AT_IMPORT: Path | None = None
"""The cache folder ir_datasets was first imported with (it never re-reads IR_DATASETS_HOME)."""


def offline_mode() -> bool:
    """True when the user asked for no downloads (RESRANK_OFFLINE or HF_HUB_OFFLINE set to 1/true/yes)."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in OFFLINE_ENV_VARS)


def ir_datasets_home() -> Path:
    """Where ir_datasets keeps its cache (it reads IR_DATASETS_HOME when first imported)."""
    return Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))


def load_ir_datasets(
    dataset_id: str, name: str | None = None, *, docs: bool = True, judged_only: bool = True
) -> Dataset:
    """Load queries, qrels and (when ``docs``) the corpus of an ir_datasets id.

    ir_datasets downloads missing files itself; offline, or when downloads are refused
    (:func:`offline_mode`), this raises :class:`DataUnavailableError` saying how to seed a
    cache. Note that ir_datasets fixes its home folder at first import: set IR_DATASETS_HOME
    before the process imports it.
    """
    global _IRDS_HOME_AT_IMPORT
    first_import = "ir_datasets" not in sys.modules
    try:
        import ir_datasets
    except ImportError:
        raise DataUnavailableError(
            f"ir_datasets id '{dataset_id}' needs the ir_datasets package: pip install ir-datasets"
        ) from None
    if first_import:
        _IRDS_HOME_AT_IMPORT = ir_datasets_home()
    elif _IRDS_HOME_AT_IMPORT is not None and ir_datasets_home() != _IRDS_HOME_AT_IMPORT:
        raise ResRankError(
            f"IR_DATASETS_HOME is now {ir_datasets_home()} but ir_datasets was imported with "
            f"{_IRDS_HOME_AT_IMPORT} and keeps using it; set IR_DATASETS_HOME before the process starts"
        )
    try:
        ds = ir_datasets.load(dataset_id)
    except KeyError:
        raise ResRankError(
            f"'{dataset_id}' is not an ir_datasets id; see https://ir-datasets.com for the catalogue "
            "(e.g. beir/scifact/test, msmarco-passage/trec-dl-2019/judged)"
        ) from None
    if not ds.has_queries() or not ds.has_qrels():
        raise ResRankError(f"ir_datasets id '{dataset_id}' has no queries or no qrels; use an evaluation subset id")
    if docs and not ds.has_docs():
        raise ResRankError(f"ir_datasets id '{dataset_id}' has no documents; use an id with a corpus")
    try:
        with _downloads_refused(offline_mode()):
            qrels: Qrels = {}
            for qrel in ds.qrels_iter():
                qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
            queries = [q for q in _irds_queries(ds.queries_iter(), dataset_id) if not judged_only or q.qid in qrels]
            corpus = _irds_docs(ds.docs_iter(), dataset_id) if docs else None
    except ResRankError:
        raise
    except PermissionError as err:
        raise ResRankError(
            f"ir_datasets cannot write its cache for '{dataset_id}' ({err}); IR_DATASETS_HOME "
            f"({ir_datasets_home()}) must be a writable folder (copy a read-only seeded cache first)"
        ) from None
    except Exception as err:
        if not _is_download_failure(err):
            raise
        refused = ""
        if offline_mode():
            refused = " Downloads were refused because offline mode is on (RESRANK_OFFLINE / HF_HUB_OFFLINE)."
        raise DataUnavailableError(
            f"ir_datasets could not download '{dataset_id}' (offline?). Provide it via IR_DATASETS_HOME with a seeded "
            f"cache (currently {ir_datasets_home()}), or use a local BEIR folder (datasets.definitions in the config) "
            f"or a candidates file.{refused} Cause: {type(err).__name__}: {str(err)[:300]}"
        ) from None
    if not qrels:
        raise ResRankError(f"ir_datasets id '{dataset_id}' yielded no qrels")
    if not queries:
        raise ResRankError(f"ir_datasets id '{dataset_id}' yielded no judged queries")
    return Dataset(name=name or dataset_id, queries=queries, qrels=qrels, corpus=corpus)


def _irds_queries(items: Iterable[Any], dataset_id: str) -> Iterator[Query]:
    seen: set[str] = set()
    for item in items:
        qid = str(item.query_id)
        text = getattr(item, "text", None)
        if not isinstance(text, str):
            text = item.default_text()
        if not text.strip():
            raise ResRankError(f"ir_datasets id '{dataset_id}': query {qid!r} has empty text")
        if qid in seen:
            raise ResRankError(f"ir_datasets id '{dataset_id}': duplicate query id {qid!r}")
        seen.add(qid)
        yield Query(qid=qid, text=text)


def _irds_docs(items: Iterable[Any], dataset_id: str) -> dict[str, Passage]:
    corpus: dict[str, Passage] = {}
    for item in items:
        docid = str(item.doc_id)
        text = getattr(item, "text", None)
        if not isinstance(text, str):
            text = item.default_text()
        title = getattr(item, "title", "") or ""
        if docid in corpus:
            raise ResRankError(f"ir_datasets id '{dataset_id}': duplicate document id {docid!r}")
        corpus[docid] = Passage(docid=docid, text=text, title=str(title))
    return corpus


@contextlib.contextmanager
def _downloads_refused(active: bool) -> Iterator[None]:
    """While active, every ir_datasets network download raises instead of trying the network."""
    if not active:
        yield
        return
    from ir_datasets.util import download

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _DownloadRefused(f"download of {getattr(self, 'url', None) or getattr(self, 'uri', '?')} refused")

    patched = [
        (download.RequestsDownload, "__iter__"),
        (download.RequestsDownload, "stream"),
        (download.GoogleDriveDownload, "stream"),
        (download.GoogleCloudBucketStream, "stream"),
    ]
    saved = [(cls, attr, cls.__dict__[attr]) for cls, attr in patched]
    try:
        for cls, attr in patched:
            setattr(cls, attr, refuse)
        yield
    finally:
        for cls, attr, original in saved:
            setattr(cls, attr, original)


def _is_download_failure(err: BaseException) -> bool:
    """Whether ``err`` (or anything in its cause chain) means ir_datasets could not fetch a file."""
    from requests.exceptions import RequestException  # an ir_datasets dependency

    network = (ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError, RequestException)
    pending: list[BaseException] = [err]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # FileNotFoundError: a manual-download file (ir_datasets "instructions") is not in the cache.
        if isinstance(current, (*network, FileNotFoundError)):
            return True
        if isinstance(current, RuntimeError) and current.args and current.args[0] == "All download sources failed":
            return True
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


# --------------------------------------------------------------------------- field helpers


def _id_field(obj: dict[str, Any], key: str, path: str | Path, lineno: int) -> str:
    if key not in obj:
        raise ResRankError(f"{path}:{lineno}: missing required key '{key}'; every line needs it")
    value = _as_id(obj[key], f"{path}:{lineno}: '{key}'")
    if not value.strip():
        raise ResRankError(f"{path}:{lineno}: '{key}' is empty")
    return value


def _str_field(obj: dict[str, Any], key: str, path: str | Path, lineno: int, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise ResRankError(f"{path}:{lineno}: missing required key '{key}'; every line needs it")
        return ""
    value = obj[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ResRankError(f"{path}:{lineno}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _as_id(value: Any, where: str) -> str:
    """Identifiers are strings everywhere; ints (as RankGPT JSON writes them) are converted."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ResRankError(f"{where} must be a string or integer, got {type(value).__name__}")
    return str(value)
