"""Dataset readers: malformed input on small synthetic files, counts on the real data."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, require

from resrank.data import sources
from resrank.data.prepared import read_prepared
from resrank.errors import DataUnavailableError, ResRankError

# --------------------------------------------------------------------------- synthetic helpers


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def make_beir(root: Path, corpus: list[str] | None = None, queries: list[str] | None = None) -> Path:
    """A tiny BEIR folder: 3 docs, 3 queries of which q1, q2 are judged in test and q3 in train."""
    folder = root / "tiny"
    write_lines(
        folder / "corpus.jsonl",
        corpus
        or [
            json.dumps({"_id": "d1", "title": "Cats", "text": "cats purr"}),
            json.dumps({"_id": "d2", "title": "", "text": "dogs bark"}),
            json.dumps({"_id": "d3", "text": "no title field"}),
        ],
    )
    write_lines(
        folder / "queries.jsonl",
        queries
        or [
            json.dumps({"_id": "q3", "text": "train query"}),
            json.dumps({"_id": "q1", "text": "do cats purr"}),
            json.dumps({"_id": "q2", "text": "do dogs bark", "metadata": {}}),
        ],
    )
    write_lines(folder / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2\t2", "q2\td1\t0"])
    write_lines(folder / "qrels" / "train.tsv", ["query-id\tcorpus-id\tscore", "q3\td3\t1"])
    return folder


def hit(qid: object, docid: object, rank: int, score: float, content: str = "text") -> dict[str, object]:
    return {"content": content, "qid": qid, "docid": docid, "rank": rank, "score": score}


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- BEIR folders


def test_beir_keeps_only_split_queries_in_file_order(tmp_path: Path) -> None:
    ds = sources.load_beir(make_beir(tmp_path), "test")
    assert [(q.qid, q.text) for q in ds.queries] == [("q1", "do cats purr"), ("q2", "do dogs bark")]
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}
    assert ds.corpus is not None and sorted(ds.corpus) == ["d1", "d2", "d3"]
    assert ds.corpus["d1"].contents == "Cats\ncats purr"
    assert ds.corpus["d3"].title == "" and ds.corpus["d3"].text == "no title field"
    assert ds.candidates is None and ds.name == "tiny"
    train = sources.load_beir(make_beir(tmp_path / "b"), "train")
    assert [q.qid for q in train.queries] == ["q3"]


def test_beir_duplicate_doc_id_names_file_and_line(tmp_path: Path) -> None:
    corpus = [json.dumps({"_id": d, "text": t}) for d, t in (("d1", "a"), ("d2", "b"), ("d1", "c"))]
    with pytest.raises(ResRankError, match=r"corpus\.jsonl:3: duplicate document id 'd1' \(first seen on line 1\)"):
        sources.load_beir(make_beir(tmp_path, corpus=corpus))


def test_beir_missing_key_names_file_and_line(tmp_path: Path) -> None:
    corpus = [json.dumps({"_id": "d1", "text": "a"}), json.dumps({"_id": "d2", "title": "no text"})]
    with pytest.raises(ResRankError, match=r"corpus\.jsonl:2: missing required key 'text'"):
        sources.load_beir(make_beir(tmp_path, corpus=corpus))
    queries = [json.dumps({"text": "no id"})]
    with pytest.raises(ResRankError, match=r"queries\.jsonl:1: missing required key '_id'"):
        sources.load_beir(make_beir(tmp_path / "q", queries=queries))


def test_beir_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    corpus = [json.dumps({"_id": "d1", "text": "a"}), "", '{"_id": "d2", "text": ']
    with pytest.raises(ResRankError, match=r"corpus\.jsonl:3: malformed JSON line"):
        sources.load_beir(make_beir(tmp_path, corpus=corpus))


def test_beir_wrong_field_type_is_refused(tmp_path: Path) -> None:
    corpus = [json.dumps({"_id": "d1", "text": ["not", "a", "string"]})]
    with pytest.raises(ResRankError, match=r"corpus\.jsonl:1: 'text' must be a string, got list"):
        sources.load_beir(make_beir(tmp_path, corpus=corpus))


def test_beir_empty_query_text_is_refused(tmp_path: Path) -> None:
    queries = [json.dumps({"_id": "q1", "text": "ok"}), json.dumps({"_id": "q2", "text": "   "})]
    with pytest.raises(ResRankError, match=r"queries\.jsonl:2: query 'q2' has empty text"):
        sources.load_beir(make_beir(tmp_path, queries=queries))


def test_beir_judged_query_absent_from_queries_file(tmp_path: Path) -> None:
    queries = [json.dumps({"_id": "q1", "text": "ok"})]
    with pytest.raises(ResRankError, match=r"test\.tsv: 1 judged query id\(s\) absent .*'q2'"):
        sources.load_beir(make_beir(tmp_path, queries=queries))


def test_beir_missing_split_lists_present_splits(tmp_path: Path) -> None:
    with pytest.raises(ResRankError, match=r"no qrels for split 'dev' .*splits present: test, train"):
        sources.load_beir(make_beir(tmp_path), "dev")


def test_beir_absent_folder_is_unavailable_not_malformed(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="does not exist; download and unzip"):
        sources.load_beir(tmp_path / "nowhere")
    folder = make_beir(tmp_path)
    (folder / "queries.jsonl").unlink()
    with pytest.raises(ResRankError, match=r"lacks queries\.jsonl") as info:
        sources.load_beir(folder)
    assert not isinstance(info.value, DataUnavailableError)


# --------------------------------------------------------------------------- TREC files


def test_trec_topics_plain_and_gzip(tmp_path: Path) -> None:
    lines = ["1\tfirst topic", "", "2\tsecond\twith a tab"]
    plain = write_lines(tmp_path / "topics.tsv", lines)
    gz = tmp_path / "topics.tsv.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    expected = [("1", "first topic"), ("2", "second\twith a tab")]
    assert [(q.qid, q.text) for q in sources.read_trec_topics(plain)] == expected
    assert [(q.qid, q.text) for q in sources.read_trec_topics(gz)] == expected


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["1\tok", "2 no tab here"], r"topics\.tsv:2: malformed topic line"),
        (["1\tok", "1\tagain"], r"topics\.tsv:2: duplicate topic id '1' \(first seen on line 1\)"),
        (["1\t  "], r"topics\.tsv:1: topic '1' has empty text"),
    ],
)
def test_trec_topics_malformed(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(ResRankError, match=message):
        sources.read_trec_topics(write_lines(tmp_path / "topics.tsv", lines))


def test_trec_run_as_first_stage_with_and_without_corpus(tmp_path: Path) -> None:
    folder = make_beir(tmp_path)
    topics = write_lines(tmp_path / "topics.tsv", ["q1\tdo cats purr", "q2\tdo dogs bark", "q9\tunjudged"])
    qrels = write_lines(tmp_path / "qrels.txt", ["q1 0 d1 1", "q2 0 d2 2"])
    run = write_lines(
        tmp_path / "run.trec",
        ["q1 Q0 d2 1 5.0 bm25", "q1 Q0 d3 2 7.5 bm25", "q1 Q0 d1 3 5.0 bm25", "q2 Q0 d2 1 1.0 bm25", "q9 Q0 d1 1 1 x"],
    )
    ds = sources.load_trec(topics, qrels, run=run, corpus=folder, name="t")
    assert [q.qid for q in ds.queries] == ["q1", "q2"]  # q9 is unjudged
    assert ds.candidates is not None
    first = ds.candidates[0]
    # best first; the 5.0 tie is broken by docid as trec_eval does
    assert [(c.docid, c.score) for c in first.candidates] == [("d3", 7.5), ("d1", 5.0), ("d2", 5.0)]
    assert (first.candidates[1].title, first.candidates[1].text) == ("Cats", "cats purr")
    bare = sources.load_trec(topics, qrels, run=run, corpus=None)
    assert bare.corpus is None and bare.candidates is not None
    assert all(c.text == "" and c.title == "" for cl in bare.candidates for c in cl.candidates)
    everything = sources.load_trec(topics, qrels, run=run, judged_only=False)
    assert [q.qid for q in everything.queries] == ["q1", "q2", "q9"]


def test_trec_run_mismatches_are_refused(tmp_path: Path) -> None:
    folder = make_beir(tmp_path)
    topics = write_lines(tmp_path / "topics.tsv", ["q1\tdo cats purr", "q2\tdo dogs bark"])
    qrels = write_lines(tmp_path / "qrels.txt", ["q1 0 d1 1", "q2 0 d2 2"])
    foreign = write_lines(tmp_path / "foreign.trec", ["q1 Q0 zz 1 1.0 x", "q2 Q0 d1 1 1.0 x"])
    with pytest.raises(ResRankError, match=r"foreign\.trec: query 'q1' retrieves document 'zz', which the corpus"):
        sources.load_trec(topics, qrels, run=foreign, corpus=folder)
    partial = write_lines(tmp_path / "partial.trec", ["q1 Q0 d1 1 1.0 x"])
    with pytest.raises(ResRankError, match=r"partial\.trec: no candidates for 1 judged topic\(s\) \(e\.g\. q2\)"):
        sources.load_trec(topics, qrels, run=partial)


# --------------------------------------------------------------------------- retrieve_results JSON


def test_retrieve_results_ids_normalised_and_ranked(tmp_path: Path) -> None:
    data = [
        {"query": "first", "hits": [hit(7, "b", 2, 1.0), hit(7, "a", 1, 2.0, "Title: T Content: body")]},
        {"query": "second", "hits": [hit("8", 123, 1, 0.5)]},
        {"query": "unjudged", "hits": [hit(9, "c", 1, 0.1)]},
    ]
    path = write_json(tmp_path / "rr.json", data)
    lists = sources.read_retrieve_results(path)
    assert [cl.query.qid for cl in lists] == ["7", "8", "9"]
    assert [(c.docid, c.score) for c in lists[0].candidates] == [("a", 2.0), ("b", 1.0)]
    assert lists[0].candidates[0].text == "Title: T Content: body"  # kept verbatim
    assert lists[1].candidates[0].docid == "123"
    qrels = write_lines(tmp_path / "qrels.txt", ["7 0 a 1", "8 0 123 0"])
    ds = sources.load_retrieve_results(path, qrels, name="rr")
    assert [q.qid for q in ds.queries] == ["7", "8"] and ds.corpus is None
    assert ds.candidates is not None and [cl.query for cl in ds.candidates] == ds.queries
    assert len(sources.load_retrieve_results(path, qrels, judged_only=False).queries) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"query": "x"}, r"expected a JSON list"),
        ([{"query": "x", "hits": [hit(1, "a", 1, 1.0)]}, ["not", "an", "object"]], r"entry 1: expected an object"),
        ([{"hits": [hit(1, "a", 1, 1.0)]}], r"entry 0: 'query' must be a string"),
        ([{"query": "x", "hits": []}], r"entry 0: 'hits' must be a non-empty list"),
        (
            [{"query": "x", "hits": [hit(1, "a", 1, 1.0), {"qid": 1, "docid": "b", "score": 1}]}],
            r"entry 0 hit 1: missing key 'content'",
        ),
        ([{"query": "x", "hits": [hit(1, "a", 1, 1.0), hit(2, "b", 2, 0.5)]}], r"entry 0 hit 1: qid '2' differs"),
        ([{"query": "x", "hits": [hit(1, "a", 1, 1.0), hit(1, "a", 2, 0.5)]}], r"entry 0 hit 1: duplicate docid 'a'"),
        ([{"query": "x", "hits": [hit(1, "a", 1, float("nan"))]}], r"entry 0 hit 0: 'score' must be a finite number"),
        ([{"query": "x", "hits": [hit(1.5, "a", 1, 1.0)]}], r"entry 0 hit 0: 'qid' must be a string or integer"),
        (
            [{"query": "x", "hits": [hit(1, "a", 1, 1.0)]}, {"query": "y", "hits": [hit("1", "b", 1, 1.0)]}],
            r"entry 1: query id '1' already appeared in entry 0",
        ),
    ],
)
def test_retrieve_results_malformed_names_file_and_entry(tmp_path: Path, data: object, message: str) -> None:
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(ResRankError, match=r"bad\.json.*" + message):
        sources.read_retrieve_results(path)


def test_retrieve_results_truncated_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[\n  {"query": "x",\n   "hits": [\n', encoding="utf-8")
    with pytest.raises(ResRankError, match=r"cut\.json:4: malformed JSON"):
        sources.read_retrieve_results(path)


# --------------------------------------------------------------------------- ir_datasets

IRDS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from resrank.data import sources
    from resrank.errors import DataUnavailableError, ResRankError

    def attempt(dataset_id):
        try:
            sources.load_ir_datasets(dataset_id)
        except DataUnavailableError as err:
            return ["unavailable", str(err)]
        except ResRankError as err:
            return ["error", str(err)]
        return ["loaded", ""]

    out = {}
    # 1. offline mode refuses downloads up front
    os.environ["RESRANK_OFFLINE"] = "1"
    out["offline"] = attempt("beir/nfcorpus/test")
    del os.environ["RESRANK_OFFLINE"]
    import ir_datasets.util.download as download
    out["restored"] = download.RequestsDownload.__iter__.__module__ == download.__name__
    # 2. a real-looking connection failure (no network needed: the downloader raises)
    import requests
    def fail(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve host (simulated)")
    download.RequestsDownload.__iter__ = fail
    out["connection"] = attempt("beir/nfcorpus/test")
    out["unknown"] = attempt("no-such-collection/test")
    # 3. ir_datasets never re-reads IR_DATASETS_HOME: a later change is refused, not ignored
    os.environ["IR_DATASETS_HOME"] = os.environ["IR_DATASETS_HOME"] + "-changed"
    out["home_changed"] = attempt("beir/nfcorpus/test")
    print(json.dumps(out))
    """
)


def run_python(script: str, env: dict[str, str], cwd: Path) -> str:
    """Run in a fresh interpreter: ir_datasets fixes IR_DATASETS_HOME when first imported."""
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in sources.OFFLINE_ENV_VARS}
    env["IR_DATASETS_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return env


def test_ir_datasets_offline_failure_is_clear_without_network(tmp_path: Path) -> None:
    out = json.loads(run_python(IRDS_SCRIPT, clean_env(tmp_path / "empty-home"), tmp_path))
    for case in ("offline", "connection"):
        kind, message = out[case]
        assert kind == "unavailable", (case, message)
        assert "ir_datasets could not download 'beir/nfcorpus/test' (offline?)" in message
        assert "IR_DATASETS_HOME" in message and str(tmp_path / "empty-home") in message
        assert "local BEIR folder (datasets.definitions in the config)" in message
    assert "offline mode is on" in out["offline"][1]
    assert "Failed to resolve host (simulated)" in out["connection"][1]
    assert out["restored"] is True
    assert out["unknown"][0] == "error" and "'no-such-collection/test' is not an ir_datasets id" in out["unknown"][1]
    assert out["home_changed"][0] == "error"
    assert "set IR_DATASETS_HOME before the process starts" in out["home_changed"][1]


def test_download_failure_classification() -> None:
    assert sources._is_download_failure(RuntimeError("All download sources failed", [("m", OSError())]))
    assert sources._is_download_failure(TimeoutError("read timed out"))
    wrapped = ValueError("outer")
    wrapped.__cause__ = ConnectionRefusedError("refused")
    assert sources._is_download_failure(wrapped)
    assert not sources._is_download_failure(ValueError("a parsing bug"))
    assert not sources._is_download_failure(RuntimeError("something else"))


def test_offline_mode_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in sources.OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not sources.offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("RESRANK_OFFLINE", "true")
    assert sources.offline_mode()


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_scifact_beir_counts(data_root: Path) -> None:
    (folder,) = require(data_root, "beir/scifact/corpus.jsonl")
    test = sources.load_beir(folder.parent, "test")
    assert test.corpus is not None and len(test.corpus) == 5183
    assert len(test.queries) == 300 == len(test.qrels)
    assert sum(len(d) for d in test.qrels.values()) == 339
    train = sources.load_beir(folder.parent, "train")
    assert len(train.queries) == 809 and sum(len(d) for d in train.qrels.values()) == 919
    assert not {q.qid for q in test.queries} & {q.qid for q in train.queries}


@pytest.mark.realdata
def test_real_beir_topics_match_beir_folder(data_root: Path) -> None:
    topics_path, folder = require(
        data_root, "beir/test-topics-qrels/topics.beir-v1.0.0-scifact.test.tsv.gz", "beir/scifact"
    )
    topics = sources.read_trec_topics(topics_path)
    assert [(q.qid, q.text) for q in topics] == [(q.qid, q.text) for q in sources.load_beir(folder).queries]


@pytest.mark.realdata
def test_real_published_run_without_texts(data_root: Path) -> None:
    topics, qrels, run = require(
        data_root,
        "beir/test-topics-qrels/topics.beir-v1.0.0-trec-covid.test.tsv.gz",
        "beir/test-topics-qrels/qrels.beir-v1.0.0-trec-covid.test.txt",
        "beir/bm25-runs/trec-covid.bm25-flat.top100.trec",
    )
    ds = sources.load_trec(topics, qrels, run=run, name="trec-covid-run")
    assert len(ds.queries) == 50 and ds.candidates is not None
    assert all(len(cl.candidates) == 100 for cl in ds.candidates)
    assert all(
        a.score >= b.score for cl in ds.candidates for a, b in zip(cl.candidates, cl.candidates[1:], strict=False)
    )


def seeded_home(data_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the seeded ir_datasets cache (ir_datasets extracts into it)."""
    (seed,) = require(data_root, "ir_datasets/beir/scifact/source.zip")
    home = tmp_path / "irds-home"
    shutil.copytree(seed.parents[2], home)
    for path in [home, *home.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return home


@pytest.mark.realdata
@pytest.mark.slow
def test_real_ir_datasets_equals_beir_folder(data_root: Path, tmp_path: Path) -> None:
    (folder,) = require(data_root, "beir/scifact")
    home = seeded_home(data_root, tmp_path)
    out = tmp_path / "prepared"
    script = (
        "from resrank.data.registry import load_dataset\n"
        "from resrank.data.prepared import write_prepared\n"
        f"write_prepared(load_dataset('scifact-irds', None), {str(out)!r})\n"
        "print('ok')\n"
    )
    assert run_python(script, clean_env(home), tmp_path) == "ok"
    via_irds = read_prepared(out)
    assert via_irds.name == "scifact-irds"
    via_folder = sources.load_beir(folder, "test", name="scifact")
    assert len(via_irds.queries) == 300 and via_irds.corpus is not None and len(via_irds.corpus) == 5183
    assert via_irds.queries == via_folder.queries
    assert via_irds.qrels == via_folder.qrels
    assert via_irds.corpus == via_folder.corpus
