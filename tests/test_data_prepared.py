"""Prepared-data layout: round trips, atomicity, unavailable manifests, prepare_dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require
from test_data_sources import make_beir

from resrank.data import prepared
from resrank.data.prepared import prepare_dataset, read_manifest, read_prepared, write_prepared, write_unavailable
from resrank.data.registry import load_dataset
from resrank.data.types import Candidate, CandidateList, Dataset, Passage, Query
from resrank.errors import DataUnavailableError, ResRankError


def sample(candidates: bool = True, corpus: bool = True) -> Dataset:
    queries = [Query("q1", "what purrs"), Query("2", "ünïcode query")]
    lists = [
        CandidateList(queries[0], [Candidate("d1", 2.5, "cats purr", "Cats"), Candidate("d2", -0.125, "dogs", "")]),
        CandidateList(queries[1], [Candidate("d2", 1e-9, "dogs", "")]),
    ]
    return Dataset(
        name="sample",
        queries=queries,
        qrels={"q1": {"d1": 1, "d2": 0}, "2": {"d2": 3}},
        corpus={"d1": Passage("d1", "cats purr", "Cats"), "d2": Passage("d2", "dogs")} if corpus else None,
        candidates=lists if candidates else None,
    )


def layout(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(("candidates", "corpus"), [(True, True), (True, False), (False, True)])
def test_round_trip(tmp_path: Path, candidates: bool, corpus: bool) -> None:
    ds = sample(candidates, corpus)
    write_prepared(ds, tmp_path, source={"source": "test"})
    assert read_prepared(tmp_path) == ds
    manifest = read_manifest(tmp_path)
    assert manifest["available"] is True and manifest["source"] == {"source": "test"}
    expected_files = ["qrels.txt", "queries.jsonl"] + (["corpus.jsonl"] if corpus else [])
    expected_files += ["candidates.jsonl"] if candidates else []
    assert sorted(manifest["files"]) == sorted(expected_files)
    assert layout(tmp_path) == sorted([*expected_files, "manifest.json"])
    assert manifest["counts"]["queries"] == 2 and manifest["counts"]["judgements"] == 3
    assert manifest["counts"].get("candidates") == (3 if candidates else None)
    row = json.loads((tmp_path / "queries.jsonl").read_text(encoding="utf-8").splitlines()[1])
    assert row == {"qid": "2", "text": "ünïcode query"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ds: ds.queries.clear(), "no queries to prepare"),
        (lambda ds: ds.candidates[1].candidates.clear(), "query '2' has an empty candidate list"),
        (lambda ds: ds.candidates.pop(), "candidate lists must cover exactly the queries"),
        (lambda ds: setattr(ds.candidates[0].candidates[0], "score", float("inf")), "non-finite candidate scores"),
        (lambda ds: ds.qrels.clear(), "no qrels"),
    ],
)
def test_invalid_dataset_writes_nothing(tmp_path: Path, mutate: object, message: str) -> None:
    ds = sample()
    mutate(ds)  # type: ignore[operator]
    out = tmp_path / "out"
    with pytest.raises(ResRankError, match=message):
        write_prepared(ds, out)
    assert layout(out) == []


def test_failure_mid_way_leaves_no_complete_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_prepared(sample(), tmp_path)  # an earlier complete preparation
    original = prepared.write_jsonl

    def failing(path: Path, rows: object) -> None:
        if Path(path).name == "corpus.jsonl":
            raise OSError("disk full (simulated)")
        original(path, rows)

    monkeypatch.setattr(prepared, "write_jsonl", failing)
    with pytest.raises(OSError, match="disk full"):
        write_prepared(sample(), tmp_path)
    assert "manifest.json" not in layout(tmp_path)
    assert not [name for name in layout(tmp_path) if name.endswith(".tmp")]
    with pytest.raises(ResRankError, match=rf"incomplete prepared data in {tmp_path}; re-run `resrank data prepare`"):
        read_prepared(tmp_path)


def test_rewrite_removes_stale_files_and_tampering_is_detected(tmp_path: Path) -> None:
    write_prepared(sample(candidates=True, corpus=True), tmp_path)
    write_prepared(sample(candidates=False, corpus=True), tmp_path)
    assert "candidates.jsonl" not in layout(tmp_path)
    assert read_prepared(tmp_path).candidates is None
    with open(tmp_path / "qrels.txt", "a", encoding="utf-8") as handle:
        handle.write("q1 0 d9 1\n")
    with pytest.raises(ResRankError, match=r"qrels\.txt: changed after preparation"):
        read_prepared(tmp_path)


def test_unavailable_manifest(tmp_path: Path) -> None:
    write_prepared(sample(), tmp_path)
    write_unavailable(tmp_path, "dl20", "no candidates; supply trec-dl/dl20/bm25-top100.json")
    assert layout(tmp_path) == ["manifest.json"]
    manifest = read_manifest(tmp_path)
    assert manifest["available"] is False and manifest["name"] == "dl20" and "bm25-top100.json" in manifest["reason"]
    with pytest.raises(DataUnavailableError, match="dataset 'dl20' was not prepared: no candidates"):
        read_prepared(tmp_path)


def test_prepare_dataset_unavailable_is_not_an_error(tmp_path: Path) -> None:
    manifest = prepare_dataset("robust04", tmp_path, tmp_path / "out")
    assert manifest["available"] is False and "How to provide it" in manifest["reason"]
    assert manifest["source"]["path"] == "beir/robust04"
    assert layout(tmp_path / "out") == ["manifest.json"]


def test_prepare_dataset_propagates_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ResRankError, match="unknown dataset 'nope'"):
        prepare_dataset("nope", tmp_path, tmp_path / "out")
    folder = make_beir(tmp_path / "beir")
    (folder / "corpus.jsonl").write_text('{"_id": "d1"}\n', encoding="utf-8")
    defs = {"mine": {"source": "beir", "path": "beir/tiny", "split": "test", "first_stage": "bm25", "purpose": "eval"}}
    with pytest.raises(ResRankError, match=r"corpus\.jsonl:1: missing required key 'text'") as info:
        prepare_dataset("mine", tmp_path, tmp_path / "out", defs)
    assert not isinstance(info.value, DataUnavailableError)
    assert layout(tmp_path / "out") == []


def test_prepare_dataset_synthetic(tmp_path: Path) -> None:
    make_beir(tmp_path / "beir")
    defs = {"mine": {"source": "beir", "path": "beir/tiny", "split": "test", "first_stage": "bm25", "purpose": "eval"}}
    manifest = prepare_dataset("mine", tmp_path, tmp_path / "out", defs)
    assert manifest["counts"] == {"queries": 2, "qrels_queries": 2, "judgements": 3, "corpus": 3}
    assert read_prepared(tmp_path / "out") == load_dataset("mine", tmp_path, defs)


@pytest.mark.realdata
def test_real_prepare_dl19_round_trip(data_root: Path, tmp_path: Path) -> None:
    require(data_root, "trec-dl/dl19/bm25-top100.json", "trec-dl/dl19/qrels.txt")
    manifest = prepare_dataset("dl19", data_root, tmp_path)
    assert manifest["counts"] == {
        "queries": 43, "qrels_queries": 43, "judgements": 9260, "candidate_lists": 43, "candidates": 4300
    }
    assert "corpus.jsonl" not in manifest["files"]
    assert read_prepared(tmp_path) == load_dataset("dl19", data_root)
