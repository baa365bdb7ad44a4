"""The offline stdlib-docstrings dataset: deterministic, leak-free, split by module."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys

import pytest

from resrank.data import embedded
from resrank.data.embedded import build_embedded, collection_stats, is_test_module
from resrank.data.types import Dataset
from resrank.errors import ResRankError

FINGERPRINT_CODE = "from resrank.data.embedded import collection_stats; print(collection_stats()['fingerprint'])"


@pytest.fixture(scope="module")
def full() -> Dataset:
    return build_embedded("all")


def _module_of(dataset: Dataset, qid: str) -> str:
    """Top-level module of a query, read from its relevant passage's qualified-name title."""
    assert dataset.corpus is not None
    (docid,) = dataset.qrels[qid]
    return dataset.corpus[docid].title.split(".")[0]


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


# --- pure helpers (no build) -------------------------------------------------------------


def test_split_summary_single_line_is_the_query() -> None:
    summary, rest = embedded._split_summary("Serialize obj to JSON.\n\nMore words here.\nAnd here.")
    assert summary == "Serialize obj to JSON."
    assert rest == "More words here.\nAnd here."


def test_split_summary_wrapped_sentence_runs_to_its_end() -> None:
    doc = (
        "Return the string obtained by replacing the leftmost\nnon-overlapping occurrences. Then more\n"
        "text follows.\n\nNext paragraph."
    )
    summary, rest = embedded._split_summary(doc)
    assert summary == "Return the string obtained by replacing the leftmost non-overlapping occurrences."
    assert rest == "Then more\ntext follows.\n\nNext paragraph."


def test_split_summary_does_not_cut_at_abbreviation() -> None:
    summary, _ = embedded._split_summary("Check a value, e.g. a number\nor a string, for sanity.\n\nRest.")
    assert summary == "Check a value, e.g. a number or a string, for sanity."


@pytest.mark.parametrize(
    ("summary", "usable"),
    [
        ("Recursively delete a directory tree.", True),
        ("Return self.", False),  # too short
        ("Deprecated AST node class. Use ast.Tuple instead.", False),
        ("Internal: read an atomic part of the message.", False),
        ("fromshare(info) -> socket object", False),  # a C-style signature line
        (">>> import io >>> read_long4(io.BytesIO(b'x'))", False),
    ],
)
def test_usable_summary(summary: str, usable: bool) -> None:
    assert embedded._usable_summary(summary) is usable


def test_ids_are_sha1_prefixes_and_repeats_are_disambiguated() -> None:
    docs = [embedded._Doc(name, "m", "", "text") for name in ("m.C.x", "m.C.x", "m.f")]
    ids = embedded._assign_ids(docs)
    assert ids[0] == hashlib.sha1(b"m.C.x").hexdigest()[:12]
    assert ids[1] == hashlib.sha1(b"m.C.x#2").hexdigest()[:12]
    assert len(set(ids)) == 3


def test_split_assignment_is_a_fixed_hash_of_the_module_name() -> None:
    # pins the scheme sha1(name) mod 100 < 20: changing it silently would reshuffle the splits
    for name in ("json", "textwrap", "os", "email"):
        expected = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100 < 20
        assert is_test_module(name) is expected
    assert is_test_module("json") and not is_test_module("textwrap")


def test_walk_skips_tests_private_and_tool_folders() -> None:
    modules = [name for name, _ in embedded._module_files(embedded.stdlib_root())]
    assert modules == sorted(modules, key=lambda m: tuple(m.split(".")))
    assert {"json", "json.decoder", "textwrap", "email.message"} <= set(modules)
    for name in modules:
        parts = name.split(".")
        assert not any(p.startswith("_") for p in parts), name
        assert not set(parts) & {"test", "tests", "idlelib", "lib2to3", "turtledemo"}, name


# --- the built collection ----------------------------------------------------------------


def test_counts_are_plausible(full: Dataset) -> None:
    stats = collection_stats()
    print(f"embedded collection on Python {stats['python_version']}: {stats}")
    assert stats["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert 1_000 <= stats["queries"]["all"] <= 2_500
    assert 4_000 <= stats["passages"] <= 10_000
    assert stats["queries"]["train"] + stats["queries"]["test"] == stats["queries"]["all"] == len(full.queries)
    assert stats["passages"] == len(full.corpus or {})
    assert stats["relevant_passages"] + stats["distractors"] == stats["passages"]
    # the test split is ~20% of modules, so it must be a real minority but not empty
    assert 0.1 <= stats["queries"]["test"] / stats["queries"]["all"] <= 0.5
    assert re.fullmatch(r"[0-9a-f]{64}", stats["fingerprint"])
    stats["passages"] = -1  # callers get a copy: the cached stats stay intact
    assert collection_stats()["passages"] == len(full.corpus or {})


def test_dataset_shape_and_names() -> None:
    test, train, both = build_embedded(), build_embedded("train"), build_embedded("all")
    assert (test.name, train.name, both.name) == ("embedded", "embedded-train", "embedded-all")
    for ds in (test, train, both):
        assert ds.candidates is None
        assert ds.corpus == both.corpus  # every split searches the whole corpus
        assert set(ds.qrels) == {q.qid for q in ds.queries}
    assert {q.qid for q in test.queries} | {q.qid for q in train.queries} == {q.qid for q in both.queries}
    assert not {q.qid for q in test.queries} & {q.qid for q in train.queries}


def test_bad_split_is_refused() -> None:
    with pytest.raises(ResRankError, match="split must be"):
        build_embedded("dev")  # type: ignore[arg-type]


def test_no_module_in_both_splits() -> None:
    test, train = build_embedded("test"), build_embedded("train")
    test_modules = {_module_of(test, q.qid) for q in test.queries}
    train_modules = {_module_of(train, q.qid) for q in train.queries}
    assert test_modules and train_modules
    assert not test_modules & train_modules
    assert all(is_test_module(m) for m in test_modules)
    assert not any(is_test_module(m) for m in train_modules)


def test_qrels_point_to_one_existing_passage(full: Dataset) -> None:
    assert full.corpus is not None
    for query in full.queries:
        judged = full.qrels[query.qid]
        assert list(judged.values()) == [1]
        (docid,) = judged
        assert docid in full.corpus
        # the query and its passage come from the same item: same hash suffix
        assert query.qid.removeprefix("q-") == docid.removeprefix("doc-")


def test_no_passage_contains_its_own_query(full: Dataset) -> None:
    assert full.corpus is not None
    for query in full.queries:
        (docid,) = full.qrels[query.qid]
        passage = full.corpus[docid]
        assert query.text not in passage.contents
        assert _fold(query.text).rstrip(".") not in _fold(passage.contents)


def test_no_other_passage_contains_a_query_verbatim(full: Dataset) -> None:
    # the ambiguity rule: otherwise an unjudged passage would match the query word for word
    assert full.corpus is not None
    haystack = "\x00".join(_fold(p.text) for p in full.corpus.values())
    leaking = [q.text for q in full.queries if _fold(q.text).rstrip(".") in haystack]
    assert leaking == []


def test_ids_and_texts_are_unique(full: Dataset) -> None:
    assert full.corpus is not None
    qids = [q.qid for q in full.queries]
    assert len(qids) == len(set(qids))
    assert len({q.text for q in full.queries}) == len(qids)
    for docid, passage in full.corpus.items():
        assert passage.docid == docid
        assert re.fullmatch(r"doc-[0-9a-f]{12}", docid)
    assert all(re.fullmatch(r"q-[0-9a-f]{12}", qid) for qid in qids)
    assert len({_fold(p.text) for p in full.corpus.values()}) == len(full.corpus)


def test_known_items(full: Dataset) -> None:
    assert full.corpus is not None
    by_title = {p.title: p for p in full.corpus.values()}
    query_of = {docid: qid for qid, judged in full.qrels.items() for docid in judged}
    texts = {q.qid: q.text for q in full.queries}

    dedent = by_title["textwrap.dedent"]
    assert dedent.text.startswith("def dedent(text)\n\n")
    assert "triple-quoted strings" in dedent.text
    assert texts[query_of[dedent.docid]] == "Remove any common leading whitespace from every line in `text`."
    assert dedent.docid == "doc-" + hashlib.sha1(b"textwrap.dedent").hexdigest()[:12]

    dumps = by_title["json.dumps"]
    assert dumps.text.startswith("def dumps(obj, *, skipkeys=False")
    assert texts[query_of[dumps.docid]] == "Serialize ``obj`` to a JSON formatted ``str``."
    assert query_of[dumps.docid] in {q.qid for q in build_embedded("test").queries}  # json is a test module

    # a module docstring is a distractor: in the corpus, judged for no query
    assert "JSON (JavaScript Object Notation)" in by_title["json"].text
    assert by_title["json"].docid not in query_of


def test_fingerprint_covers_the_content() -> None:
    coll = embedded._build_collection()
    docid = next(iter(coll.passages))
    changed = dict(coll.passages)
    changed[docid] = dataclasses.replace(changed[docid], text=changed[docid].text + " ")
    assert embedded._fingerprint(dataclasses.replace(coll, passages=changed)) != embedded._fingerprint(coll)
    assert embedded._fingerprint(coll) == collection_stats()["fingerprint"]


@pytest.mark.slow
def test_rebuild_is_identical(full: Dataset) -> None:
    before = collection_stats()["fingerprint"]
    embedded._build_collection.cache_clear()
    embedded._stats.cache_clear()
    assert build_embedded("all") == full
    assert collection_stats()["fingerprint"] == before


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["0", "4242"])
def test_fingerprint_is_independent_of_hash_seed(seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    result = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_CODE], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip() == collection_stats()["fingerprint"]
