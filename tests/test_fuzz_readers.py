"""Property-based tests of the readers: any bytes give well-formed data or a ``ResRankError``.

Every reader of a field format (TREC run, qrels and topics, BEIR JSONL corpus/queries and
whole folders, RankGPT retrieve_results JSON, the prepared layout) is fed random bytes and
random near-valid text. It must either return data of the documented shape or raise
``ResRankError`` (the CLI turns that into one message and exit status 2); any other
exception type is a bug. Writers are checked by round trips: ``write_trec_run`` then
``read_trec_run`` (scores are written with 6 decimals, so the run comes back rounded to 6
decimals), ``write_trec_qrels`` then ``read_trec_qrels``, and ``write_prepared`` then
``read_prepared``.

``RESRANK_FUZZ_EXAMPLES`` raises the number of examples per property (default 60).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resrank.data.prepared import read_prepared, write_prepared
from resrank.data.sources import load_beir, read_beir_corpus, read_beir_queries, read_retrieve_results, read_trec_topics
from resrank.data.types import Candidate, CandidateList, Dataset, Passage, Query
from resrank.errors import ResRankError
from resrank.io import read_trec_qrels, read_trec_run, write_trec_qrels, write_trec_run

T = TypeVar("T")

EXAMPLES = int(os.environ.get("RESRANK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is shared by all examples of a test)."""
    with tempfile.TemporaryDirectory(prefix="resrank-fuzz-") as tmp:
        yield Path(tmp)


def outcome(read: Callable[..., T], *args: Any) -> T | None:
    """The reader's result, or None when it refused the input with ResRankError.

    Any other exception propagates and fails the property.
    """
    try:
        return read(*args)
    except ResRankError as err:
        assert str(err).strip(), "a ResRankError needs a message"
        return None


def utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (from a generated Python string) becomes invalid UTF-8, as in a broken file."""
    return text.encode("utf-8", "surrogatepass")


def written(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- strategies
#
# Each format has a "mostly valid" generator: well-formed records whose fields are, now and
# then, replaced by an odd value, dropped, or followed by an extra one; lines of random
# tokens, blank lines and arbitrary bytes are mixed in. That reaches both the accepting
# paths and every refusal (``test_fuzz_strategies_reach_valid_inputs`` guards the former).

SAFE_TEXT = st.characters(blacklist_categories=("Cs",))  # text that UTF-8 can encode
# tokens that exercise the parsers' edge cases: numbers that are not, headers, odd whitespace
ODD_TOKENS = st.one_of(
    st.sampled_from(
        ["q1", "q2", "Q0", "0", "d1", "d2", "1", "2", "-1", "2.5", "1e3", "1e999", "-1e999", "nan", "NaN", "inf",
         "-inf", "Infinity", "1_000", "0x1f", "١٢", "query-id", "corpus-id", "score", "bm25", "", "\x00", "\x0b",
         "\x1c", "\x85", "\xa0", "\u2028", "\r", "é", "😀", "\ufeff", "9" * 400]
    ),
    st.text(SAFE_TEXT, max_size=6),
)
SEPARATORS = st.sampled_from([" ", " ", "\t", "  ", " \t", "\x0c"])
QIDS = st.sampled_from(["q1", "q2", "3", "Q-4"])
DOCIDS = st.sampled_from(["d1", "d2", "d3", "d4", "7", "doc#5"])
NUMBERS = st.one_of(st.integers(-5, 200).map(str), st.floats().map(repr), st.floats(-10, 10).map(lambda x: f"{x:.6f}"))


@st.composite
def mutated(draw: st.DrawFn, fields: list[str], rate: int = 10) -> list[str]:
    """``fields`` with each one, about once in ``rate`` draws, replaced by an odd token or dropped."""
    out = []
    for field in fields:
        roll = draw(st.integers(0, rate))
        if roll == 0:
            continue
        out.append(draw(ODD_TOKENS) if roll == 1 else field)
    if draw(st.integers(0, rate)) == 0:
        out.append(draw(ODD_TOKENS))
    return out


@st.composite
def records(draw: st.DrawFn, template: Callable[[st.DrawFn], list[str]], tab_only: bool = False) -> str:
    """Lines of mostly well-formed records (``template`` draws one), some random-token lines and blanks."""
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind < 8:
            fields = draw(mutated(template(draw), rate=20))
        elif kind < 9:
            fields = draw(st.lists(ODD_TOKENS, max_size=7))
        else:
            fields = []
        sep = "\t" if tab_only and kind < 8 else draw(SEPARATORS)
        rows.append(sep.join(fields))
    return draw(st.sampled_from(["\n", "\r\n"])).join(rows) + draw(st.sampled_from(["", "\n"]))


def run_record(draw: st.DrawFn) -> list[str]:
    return [draw(QIDS), "Q0", draw(DOCIDS), str(draw(st.integers(1, 100))), draw(NUMBERS), "bm25"]


def qrels_record(draw: st.DrawFn) -> list[str]:
    grade = draw(st.one_of(st.integers(-1, 4).map(str), NUMBERS))
    if draw(st.booleans()):
        return [draw(QIDS), "0", draw(DOCIDS), grade]
    return [draw(QIDS), draw(DOCIDS), grade]  # BEIR TSV (its header is one of the odd tokens' lines)


def topic_record(draw: st.DrawFn) -> list[str]:
    return [draw(QIDS), draw(st.text(SAFE_TEXT, max_size=15))]


RUN_TEXT = records(run_record)
QRELS_TEXT = st.one_of(records(qrels_record), records(qrels_record).map(lambda t: "query-id\tcorpus-id\tscore\n" + t))
TOPICS_TEXT = records(topic_record, tab_only=True)


def encoded(text_strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Mostly UTF-8 text, sometimes Latin-1 text, sometimes arbitrary bytes."""
    return st.one_of(
        text_strategy.map(utf8),
        text_strategy.map(utf8),
        text_strategy.map(lambda t: t.encode("latin-1", errors="replace")),
        st.binary(max_size=200),
    )


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**64, 10**400]),
    st.floats(),
    st.text(SAFE_TEXT, max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(SAFE_TEXT, max_size=5), inner, max_size=3),
    max_leaves=8,
)
# odd values a JSON field may hold instead of the expected one (lone surrogates become \\udXXX escapes)
ODD_VALUES = st.one_of(JSON_VALUES, st.sampled_from(["", "  ", "a b", "\ud800", "x\udfff", 1.5, -0.0, 10**400]))
ANY_TEXT = st.text(SAFE_TEXT, max_size=12)
NON_BLANK = st.text(SAFE_TEXT, max_size=12).filter(lambda t: t.strip() != "")


@st.composite
def mutated_object(draw: st.DrawFn, obj: dict[str, Any], rate: int = 10) -> dict[str, Any]:
    """``obj`` with each key, about once in ``rate`` draws, dropped or given an odd value; sometimes an extra key."""
    out = {}
    for key, value in obj.items():
        roll = draw(st.integers(0, rate))
        if roll == 0:
            continue
        out[key] = draw(ODD_VALUES) if roll == 1 else value
    if draw(st.integers(0, rate)) == 0:
        out[draw(st.text(SAFE_TEXT, max_size=5))] = draw(JSON_VALUES)
    return out


@st.composite
def jsonl(draw: st.DrawFn, template: Callable[[st.DrawFn], dict[str, Any]]) -> str:
    """JSONL lines: mostly (mutated) objects drawn by ``template``, sometimes other JSON, garbage or blanks."""
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 11))
        if kind < 9:
            rows.append(json.dumps(draw(mutated_object(template(draw))), ensure_ascii=draw(st.booleans())))
        elif kind == 9:
            rows.append(json.dumps(draw(JSON_VALUES)))
        elif kind == 10:
            rows.append(draw(st.text(SAFE_TEXT, max_size=20)))
        else:
            rows.append("")
    return "\n".join(rows) + draw(st.sampled_from(["", "\n", "\n\n"]))


def corpus_record(draw: st.DrawFn) -> dict[str, Any]:
    return {"_id": draw(st.one_of(DOCIDS, st.integers(0, 3))), "title": draw(ANY_TEXT), "text": draw(ANY_TEXT)}


def query_record(draw: st.DrawFn) -> dict[str, Any]:
    return {"_id": draw(st.one_of(QIDS, st.integers(0, 3))), "text": draw(ANY_TEXT)}


def candidates_record(draw: st.DrawFn) -> dict[str, Any]:
    hits = [draw(mutated_object({"docid": draw(DOCIDS), "score": draw(st.floats(-5, 5)), "title": draw(ANY_TEXT),
                                 "text": draw(ANY_TEXT)})) for _ in range(draw(st.integers(0, 3)))]
    return {"qid": draw(QIDS), "query": draw(ANY_TEXT), "hits": hits}


@st.composite
def retrieve_results_json(draw: st.DrawFn) -> str:
    """RankGPT-style entries; fields sometimes missing, mistyped or inconsistent (qids, duplicate docids)."""
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(draw(JSON_VALUES))
    entries = []
    for e in range(draw(st.integers(0, 3))):
        # ids are mostly distinct (q<e>, d<i>); now and then one collides with another entry's or hit's
        qid = draw(st.sampled_from([f"q{e}", f"q{e}", f"q{e}", e, "q1", 1]))
        hits = []
        for i in range(draw(st.integers(0, 4))):
            docid = draw(st.sampled_from([f"d{i}", f"d{i}", f"d{i}", f"d{i}", i, "d1", 7]))
            hit = {"content": draw(ANY_TEXT), "qid": qid, "docid": docid, "rank": draw(st.integers(-1, 6)),
                   "score": draw(st.floats(-10, 10))}
            hits.append(draw(mutated_object(hit, rate=25)))
        query = draw(st.one_of(NON_BLANK, ANY_TEXT))
        entries.append(draw(mutated_object({"query": query, "hits": hits}, rate=25)))
    return json.dumps(entries, ensure_ascii=draw(st.booleans()))


# --------------------------------------------------------------------------- shape checks


def is_token(value: Any) -> bool:
    """A whitespace-free, non-empty identifier (what a whitespace-split record can hold)."""
    return isinstance(value, str) and value != "" and value.split() == [value]


def check_run(run: dict[str, dict[str, float]]) -> None:
    assert isinstance(run, dict) and run
    for qid, docs in run.items():
        assert is_token(qid) and isinstance(docs, dict) and docs
        for docid, score in docs.items():
            assert is_token(docid)
            assert isinstance(score, float) and math.isfinite(score)


def check_qrels(qrels: dict[str, dict[str, int]]) -> None:
    assert isinstance(qrels, dict) and qrels
    for qid, docs in qrels.items():
        assert is_token(qid) and isinstance(docs, dict) and docs
        for docid, grade in docs.items():
            assert is_token(docid)
            assert type(grade) is int


def check_queries(queries: list[Query]) -> None:
    assert queries
    qids = [q.qid for q in queries]
    assert len(set(qids)) == len(qids)
    for q in queries:
        assert isinstance(q.qid, str) and q.qid.strip()
        assert isinstance(q.text, str) and q.text.strip()


def check_corpus(corpus: dict[str, Passage]) -> None:
    assert isinstance(corpus, dict) and corpus
    for docid, passage in corpus.items():
        assert isinstance(passage, Passage) and passage.docid == docid and docid.strip()
        assert isinstance(passage.text, str) and isinstance(passage.title, str)


def check_candidate_lists(lists: list[CandidateList]) -> None:
    assert lists
    check_queries([cl.query for cl in lists])
    for cl in lists:
        assert cl.candidates
        docids = [c.docid for c in cl.candidates]
        assert len(set(docids)) == len(docids)
        for c in cl.candidates:
            assert isinstance(c.docid, str) and isinstance(c.text, str)
            assert isinstance(c.score, float) and math.isfinite(c.score)


def check_encodable(*texts: str) -> None:
    """Whatever a reader returns can be written back as UTF-8 (no lone surrogates)."""
    for text in texts:
        text.encode("utf-8")


# --------------------------------------------------------------------------- readers never crash


@FUZZ
@given(content=encoded(RUN_TEXT))
def test_trec_run_reader(content: bytes) -> None:
    with scratch() as tmp:
        run = outcome(read_trec_run, written(tmp / "run.trec", content))
    if run is not None:
        check_run(run)


@FUZZ
@given(content=encoded(QRELS_TEXT))
@example(content=b"q1 0 d1 inf\n")  # int(float("inf")) raised OverflowError
def test_trec_qrels_reader(content: bytes) -> None:
    with scratch() as tmp:
        qrels = outcome(read_trec_qrels, written(tmp / "qrels.txt", content))
    if qrels is not None:
        check_qrels(qrels)


@FUZZ
@given(content=encoded(TOPICS_TEXT), gz=st.sampled_from(["plain", "gzip", "broken-gzip"]))
@example(content=b"", gz="broken-gzip")  # gzip.BadGzipFile escaped
@example(content=b"q1\tsort a list\n" * 50, gz="broken-gzip")  # EOFError: truncated stream
def test_trec_topics_reader(content: bytes, gz: str) -> None:
    with scratch() as tmp:
        if gz == "plain":
            path = written(tmp / "topics.tsv", content)
        elif gz == "gzip":
            path = written(tmp / "topics.tsv.gz", gzip.compress(content))
        else:
            path = written(tmp / "topics.tsv.gz", gzip.compress(content)[: max(1, len(content) // 2)])
        queries = outcome(read_trec_topics, path)
    if queries is not None:
        check_queries(queries)
        check_encodable(*(q.qid for q in queries), *(q.text for q in queries))


@FUZZ
@given(content=st.one_of(jsonl(corpus_record).map(utf8), encoded(st.text(SAFE_TEXT))))
@example(content=b'{"_id": "d1", "text": "\\ud800"}')  # a lone surrogate could not be written back as UTF-8
@example(content=b'{"_id": "d1", "text": "\\ud83d\\ude00 pair"}')  # a proper pair is fine
@example(content=b'{"_id": ' + b"9" * 5000 + b', "text": "x"}')  # int beyond 4300 digits: ValueError
def test_beir_corpus_reader(content: bytes) -> None:
    with scratch() as tmp:
        corpus = outcome(read_beir_corpus, written(tmp / "corpus.jsonl", content))
    if corpus is not None:
        check_corpus(corpus)
        check_encodable(*(f"{p.docid}{p.title}{p.text}" for p in corpus.values()))


@FUZZ
@given(content=st.one_of(jsonl(query_record).map(utf8), encoded(st.text(SAFE_TEXT))))
@example(content=b"[" * 100_000)  # RecursionError in the JSON decoder
def test_beir_queries_reader(content: bytes) -> None:
    with scratch() as tmp:
        queries = outcome(read_beir_queries, written(tmp / "queries.jsonl", content))
    if queries is not None:
        for qid, (lineno, text) in queries.items():
            assert isinstance(qid, str) and qid.strip() and isinstance(text, str)
            assert isinstance(lineno, int) and lineno >= 1
            check_encodable(qid, text)


@FUZZ
@given(
    corpus=jsonl(corpus_record),
    queries=jsonl(query_record),
    qrels=QRELS_TEXT,
    split_present=st.booleans(),
)
def test_beir_folder_loader_and_prepared_round_trip(corpus: str, queries: str, qrels: str, split_present: bool) -> None:
    """``load_beir`` returns a consistent dataset or refuses; what it returns can be prepared and read back."""
    with scratch() as tmp:
        folder = tmp / "beir"
        written(folder / "corpus.jsonl", utf8(corpus))
        written(folder / "queries.jsonl", utf8(queries))
        written(folder / "qrels" / ("test.tsv" if split_present else "dev.tsv"), utf8(qrels))
        dataset = outcome(load_beir, folder, "test", "fuzz")
        if dataset is None:
            return
        if dataset.queries:
            check_queries(dataset.queries)
        check_qrels(dataset.qrels)
        assert dataset.corpus is not None
        check_corpus(dataset.corpus)
        assert {q.qid for q in dataset.queries} <= set(dataset.qrels)
        if outcome(write_prepared, dataset, tmp / "prepared") is None:
            return  # refused before touching files (e.g. no judged query)
        assert read_prepared(tmp / "prepared") == dataset


@FUZZ
@given(content=st.one_of(retrieve_results_json().map(utf8), encoded(st.text(SAFE_TEXT))))
@example(content=b'[{"query": "q", "hits": [{"content": "c", "qid": 1, "docid": 2, "score": 1' + b"0" * 400 + b"}]}]")
@example(content=b"[" * 100_000)
@example(content=b'[{"query": "q", "hits": [{"content": "\\udc00", "qid": 1, "docid": 2, "score": 1}]}]')
def test_retrieve_results_reader(content: bytes) -> None:
    with scratch() as tmp:
        lists = outcome(read_retrieve_results, written(tmp / "top.json", content))
    if lists is not None:
        check_candidate_lists(lists)
        check_encodable(*(cl.query.text for cl in lists), *(c.text + c.docid for cl in lists for c in cl.candidates))


@FUZZ
@given(candidates=st.one_of(jsonl(candidates_record), st.text(SAFE_TEXT, max_size=50)))
@example(candidates='{"qid": "q1", "query": "a query", "hits": [{"docid": "d1", "score": 1' + "0" * 400
         + ', "title": "", "text": "x"}]}')  # float(10**400) raised OverflowError
def test_prepared_candidates_reader(candidates: str) -> None:
    """A prepared folder whose candidates.jsonl was edited by hand (verification off) never crashes.

    With verification off only the layout's shape is guaranteed (``read_prepared``'s checks):
    one non-empty list of finite-scored candidates per query of queries.jsonl. The list's own
    ``query`` text is not used downstream (queries.jsonl is), so it is not checked here.
    """
    base = Dataset("fuzz", [Query("q1", "a query")], {"q1": {"d1": 1}},
                   candidates=[CandidateList(Query("q1", "a query"), [Candidate("d1", 1.0, "text")])])
    with scratch() as tmp:
        write_prepared(base, tmp)
        (tmp / "candidates.jsonl").write_bytes(utf8(candidates))
        dataset = outcome(read_prepared, tmp, False)
    if dataset is not None:
        assert dataset.queries == base.queries and dataset.candidates is not None
        assert [cl.query.qid for cl in dataset.candidates] == ["q1"]
        for c in dataset.candidates[0].candidates:
            assert isinstance(c.docid, str) and isinstance(c.text, str) and isinstance(c.title, str)
            assert isinstance(c.score, float) and math.isfinite(c.score)
        assert dataset.candidates[0].candidates


# --------------------------------------------------------------------------- round trips

ID_TOKENS = st.text(st.characters(blacklist_categories=("Cs",)).filter(lambda c: not c.isspace()), min_size=1,
                    max_size=8)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@FUZZ
@given(
    run=st.dictionaries(ID_TOKENS, st.dictionaries(ID_TOKENS, FINITE, min_size=1, max_size=6), min_size=1, max_size=4),
    tag=ID_TOKENS,
)
def test_trec_run_round_trip(run: dict[str, dict[str, float]], tag: str) -> None:
    with scratch() as tmp:
        write_trec_run(tmp / "run.trec", run, tag=tag)
        text = (tmp / "run.trec").read_text(encoding="utf-8")
        back = read_trec_run(tmp / "run.trec")
    assert back == {qid: {docid: round(score, 6) for docid, score in docs.items()} for qid, docs in run.items()}
    # ranks are 1..n per query, in descending score order, and every line carries the tag
    rows = [line.split() for line in text.splitlines()]
    assert all(len(r) == 6 and r[1] == "Q0" and r[5] == tag for r in rows)
    for qid, docs in run.items():
        mine = [r for r in rows if r[0] == qid]
        assert [int(r[3]) for r in mine] == list(range(1, len(docs) + 1))
        scores = [float(r[4]) for r in mine]
        assert scores == sorted(scores, reverse=True)


@FUZZ
@given(
    qrels=st.dictionaries(ID_TOKENS, st.dictionaries(ID_TOKENS, st.integers(-100, 100), min_size=1, max_size=5),
                          min_size=1, max_size=4)
)
def test_trec_qrels_round_trip(qrels: dict[str, dict[str, int]]) -> None:
    with scratch() as tmp:
        write_trec_qrels(tmp / "qrels.txt", qrels)
        assert read_trec_qrels(tmp / "qrels.txt") == qrels




@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    """Datasets that ``write_prepared`` accepts: corpus, candidates, or both."""
    qids = draw(st.lists(ANY_TEXT, min_size=1, max_size=4, unique=True))
    queries = [Query(qid, draw(NON_BLANK)) for qid in qids]
    qrels = draw(st.dictionaries(ID_TOKENS, st.dictionaries(ID_TOKENS, st.integers(-2, 4), min_size=1, max_size=4),
                                 min_size=1, max_size=4))
    kind = draw(st.sampled_from(["corpus", "candidates", "both"]))
    corpus = None
    if kind in ("corpus", "both"):
        docids = draw(st.lists(NON_BLANK, min_size=1, max_size=5, unique=True))
        corpus = {d: Passage(d, draw(ANY_TEXT), draw(ANY_TEXT)) for d in docids}
    candidates = None
    if kind in ("candidates", "both"):
        candidates = [
            CandidateList(q, [Candidate(d, draw(FINITE), draw(ANY_TEXT), draw(ANY_TEXT))
                              for d in draw(st.lists(ANY_TEXT, min_size=1, max_size=4, unique=True))])
            for q in queries
        ]
    return Dataset(draw(ANY_TEXT), queries, qrels, corpus, candidates)


@FUZZ
@given(dataset=datasets())
def test_prepared_round_trip(dataset: Dataset) -> None:
    with scratch() as tmp:
        write_prepared(dataset, tmp / "prepared", source={"source": "fuzz"})
        assert read_prepared(tmp / "prepared") == dataset


def test_fuzz_strategies_reach_valid_inputs() -> None:
    """Guard against vacuous properties: the generators do produce inputs the readers accept."""
    readers = {
        "run": (read_trec_run, "r.trec"),
        "qrels": (read_trec_qrels, "q.txt"),
        "topics": (read_trec_topics, "t.tsv"),
        "corpus": (read_beir_corpus, "c.jsonl"),
        "retrieve_results": (read_retrieve_results, "t.json"),
    }
    accepted = dict.fromkeys(readers, 0)

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(run=RUN_TEXT, qrels=QRELS_TEXT, topics=TOPICS_TEXT, corpus=jsonl(corpus_record),
           retrieve_results=retrieve_results_json())
    def probe(**texts: str) -> None:
        with scratch() as tmp:
            for name, text in texts.items():
                read, file_name = readers[name]
                accepted[name] += outcome(read, written(tmp / file_name, utf8(text))) is not None

    probe()
    assert all(n > 0 for n in accepted.values()), accepted

