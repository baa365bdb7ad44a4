"""Dataset registry: names -> specs -> datasets, data-root handling, availability."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest import require
from test_data_sources import hit, make_beir, write_json, write_lines

from resrank.data import registry
from resrank.data.types import Dataset, Passage, Query
from resrank.errors import DataUnavailableError, ResRankError

BEIR_KEYS = {"source": "beir", "path": "x", "split": "test", "purpose": "eval"}
PAPER_EVAL = ["dl19", "dl20", "trec-covid", "nfcorpus", "webis-touche2020", "dbpedia-entity", "scifact", "signal1m"]
PAPER_EVAL += ["trec-news", "robust04"]
TRAIN = ["embedded-train", "scifact-train", "dl21", "msmarco-train"]


def test_registry_has_the_papers_datasets_and_valid_specs() -> None:
    names = registry.dataset_names()
    assert set(PAPER_EVAL + TRAIN + ["embedded", "scifact-irds"]) <= set(names)
    for name in names:
        spec = registry.get_spec(name)  # validates every built-in entry
        assert spec.name == name and spec.description and spec.how_to_provide, name
    assert all(registry.get_spec(n).purpose == "eval" for n in PAPER_EVAL)
    assert all(registry.get_spec(n).purpose == "train" for n in TRAIN)
    scifact = registry.get_spec("scifact")
    assert (scifact.source, scifact.path, scifact.split) == ("beir", "beir/scifact", "test")
    assert scifact.first_stage == "bm25"
    assert registry.get_spec("scifact-train").split == "train"
    assert registry.get_spec("scifact-irds").irds_id == "beir/scifact/test"
    dl20 = registry.get_spec("dl20")
    assert (dl20.source, dl20.irds_id) == ("ir_datasets", "msmarco-passage/trec-dl-2020/judged")
    assert (dl20.first_stage, dl20.candidates) == ("candidates", "trec-dl/dl20/bm25-top100.json")
    assert registry.get_spec("embedded").split == "test" and registry.get_spec("embedded-train").split == "train"


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ResRankError, match=r"unknown dataset 'scifactt'; known datasets: .*dl19, .*scifact, "):
        registry.get_spec("scifactt")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**BEIR_KEYS, "first_stage": "bm25", "pth": 1}, r"unknown key\(s\) pth"),
        ({"source": "csv", "first_stage": "bm25", "purpose": "eval"}, "'source' must be one of"),
        ({"source": "beir", "split": "test", "first_stage": "bm25", "purpose": "eval"}, "needs the key 'path'"),
        ({**BEIR_KEYS, "first_stage": "run"}, "first_stage 'run' does not fit"),
        ({"source": "retrieve_results", "path": "x", "first_stage": "candidates", "purpose": "eval"}, "'qrels'"),
        ({"source": "embedded", "split": "dev", "first_stage": "bm25", "purpose": "eval"}, "split' train or test"),
        ({**BEIR_KEYS, "path": 3, "first_stage": "bm25"}, "'path' must be a string"),
    ],
)
def test_bad_definitions_name_the_config_key(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ResRankError, match=r"config key 'datasets\.definitions\.mine'.*" + message):
        registry.get_spec("mine", {"mine": entry})


def test_missing_data_root_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RESRANK_DATA", raising=False)
    expected = "dataset 'scifact' needs the data root: set RESRANK_DATA or data_root in the config"
    with pytest.raises(DataUnavailableError, match=expected):
        registry.load_dataset("scifact", None)
    ok, reason = registry.is_available("scifact", None)
    assert not ok and expected in reason
    with pytest.raises(DataUnavailableError, match="is not a folder"):
        registry.load_dataset("scifact", tmp_path / "absent")


def test_definitions_add_and_override_entries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_beir(tmp_path / "beir")
    mine = {"mine": {"source": "beir", "path": "beir/tiny", "split": "test", "first_stage": "bm25", "purpose": "eval"}}
    assert "mine" in registry.dataset_names(mine) and "mine" not in registry.dataset_names()
    ds = registry.load_dataset("mine", tmp_path, mine)
    assert ds.name == "mine" and [q.qid for q in ds.queries] == ["q1", "q2"]
    # the data root also comes from RESRANK_DATA; an absolute path ignores the root
    monkeypatch.setenv("RESRANK_DATA", str(tmp_path))
    assert registry.load_dataset("mine", None, mine).qrels == ds.qrels
    absolute = {"mine": {**mine["mine"], "path": str(tmp_path / "beir" / "tiny")}}
    monkeypatch.delenv("RESRANK_DATA")
    assert registry.load_dataset("mine", None, absolute).qrels == ds.qrels
    # overriding one key of a built-in entry keeps the others
    override = registry.get_spec("scifact", {"scifact": {"split": "train"}})
    assert (override.path, override.split, override.source) == ("beir/scifact", "train", "beir")


def test_dl20_with_user_candidates_and_qrels_loads_offline(tmp_path: Path) -> None:
    """dl20's candidates key: a user file is the first stage; local qrels avoid ir_datasets."""
    candidates = write_json(
        tmp_path / "dl20.json",
        [{"query": "q one", "hits": [hit(11, "p1", 1, 3.0), hit(11, "p2", 2, 2.0)]},
         {"query": "q two", "hits": [hit(12, "p3", 1, 1.0)]}],
    )
    qrels = write_lines(tmp_path / "qrels.txt", ["11 0 p1 2", "12 0 p9 1"])
    defs = {"dl20": {"candidates": str(candidates), "qrels": str(qrels)}}
    ok, reason = registry.is_available("dl20", None, defs)
    assert ok, reason
    ds = registry.load_dataset("dl20", None, defs)
    assert [q.qid for q in ds.queries] == ["11", "12"] and ds.corpus is None
    assert ds.candidates is not None and [c.docid for c in ds.candidates[0].candidates] == ["p1", "p2"]
    assert ds.qrels == {"11": {"p1": 2}, "12": {"p9": 1}}


def test_missing_files_report_how_to_provide(tmp_path: Path) -> None:
    ok, reason = registry.is_available("trec-covid", tmp_path)
    assert not ok
    assert str(tmp_path / "beir" / "trec-covid") in reason and "trec-covid.zip" in reason
    with pytest.raises(DataUnavailableError, match=r"dataset 'robust04' is unavailable: .*How to provide it: Licensed"):
        registry.load_dataset("robust04", tmp_path)


def test_embedded_source_calls_build_embedded_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    built = Dataset("embedded-test", [Query("q", "text")], {"q": {"d": 1}}, corpus={"d": Passage("d", "x")})

    def build_embedded(split: str) -> Dataset:
        calls.append(split)
        return built

    fake = types.ModuleType("resrank.data.embedded")
    fake.build_embedded = build_embedded  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "resrank.data.embedded", fake)
    ds = registry.load_dataset("embedded-train", None)
    assert calls == ["train"] and ds.name == "embedded-train"
    assert ds.queries == built.queries and built.name == "embedded-test"  # the builder's object is not mutated
    assert registry.load_dataset("embedded", None).name == "embedded" and calls == ["train", "test"]


def test_ir_datasets_availability_in_offline_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))
    monkeypatch.setenv("RESRANK_OFFLINE", "1")
    ok, reason = registry.is_available("nfcorpus-irds", None)
    assert not ok and "offline mode and no ir_datasets cache" in reason
    (tmp_path / "beir" / "nfcorpus").mkdir(parents=True)
    (tmp_path / "beir" / "nfcorpus" / "source.zip").write_bytes(b"")
    ok, reason = registry.is_available("nfcorpus-irds", None)
    assert ok and str(tmp_path / "beir" / "nfcorpus") in reason


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_dl19(data_root: Path) -> None:
    require(data_root, "trec-dl/dl19/bm25-top100.json", "trec-dl/dl19/qrels.txt")
    assert registry.is_available("dl19", data_root)[0]
    ds = registry.load_dataset("dl19", data_root)
    assert ds.name == "dl19" and len(ds.queries) == 43 and ds.candidates is not None and ds.corpus is None
    assert all(isinstance(q.qid, str) for q in ds.queries)
    assert all(len(cl.candidates) == 100 for cl in ds.candidates)
    assert all(isinstance(c.docid, str) and c.text for cl in ds.candidates for c in cl.candidates)
    scores = [[c.score for c in cl.candidates] for cl in ds.candidates]
    assert all(s == sorted(s, reverse=True) for s in scores)
    assert sum(len(d) for d in ds.qrels.values()) == 9260
    topics = dict(line.split("\t", 1) for line in (data_root / "trec-dl/dl19/topics.tsv").read_text().splitlines())
    assert {q.qid: q.text for q in ds.queries} == topics


@pytest.mark.realdata
def test_real_dl21_keeps_judged_queries_with_string_ids(data_root: Path) -> None:
    json_path, qrels_path = require(data_root, "trec-dl/dl21/bm25-top100.json", "trec-dl/dl21/qrels.txt")
    raw = json.loads(json_path.read_text())
    assert isinstance(raw[0]["hits"][0]["qid"], int)  # the file writes ints
    judged = {line.split()[0] for line in qrels_path.read_text().splitlines() if line.strip()}
    expected = [str(entry["hits"][0]["qid"]) for entry in raw if str(entry["hits"][0]["qid"]) in judged]
    ds = registry.load_dataset("dl21", data_root)
    assert [q.qid for q in ds.queries] == expected and len(expected) == 53
    assert registry.get_spec("dl21").purpose == "train"
    assert ds.candidates is not None and all(cl.query.qid in ds.qrels for cl in ds.candidates)


@pytest.mark.realdata
def test_real_scifact_via_registry(data_root: Path) -> None:
    require(data_root, "beir/scifact/corpus.jsonl")
    test = registry.load_dataset("scifact", data_root)
    train = registry.load_dataset("scifact-train", data_root)
    assert (len(test.queries), len(train.queries)) == (300, 809)
    assert test.corpus is not None and len(test.corpus) == 5183


@pytest.mark.realdata
def test_real_dl20_reports_unavailable(data_root: Path) -> None:
    if (data_root / "trec-dl/dl20/bm25-top100.json").exists():
        pytest.skip("dl20 candidates present in this data root")
    ok, reason = registry.is_available("dl20", data_root)
    assert not ok and "trec-dl/dl20/bm25-top100.json" in reason and "How to provide it" in reason
    with pytest.raises(DataUnavailableError, match=r"missing candidates .*bm25-top100\.json"):
        registry.load_dataset("dl20", data_root)
