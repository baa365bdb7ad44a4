"""File readers name file:line on bad input; writers never leave partial files."""

from __future__ import annotations

from pathlib import Path

import pytest

from resrank.errors import ResRankError
from resrank.io import atomic_write, iter_jsonl, read_trec_qrels, read_trec_run, write_trec_run


def test_trec_run_round_trip_sorted_by_score(tmp_path: Path) -> None:
    run = {"q1": {"d1": 0.5, "d2": 2.0, "d3": 1.0}, "q2": {"d9": 1.0}}
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="t")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 2.000000 t"
    assert [line.split()[2] for line in lines[:3]] == ["d2", "d3", "d1"]
    assert read_trec_run(path) == run


def test_malformed_run_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2\n")
    with pytest.raises(ResRankError, match=r"bad\.trec:2: malformed TREC run line"):
        read_trec_run(path)


def test_duplicate_and_non_numeric_run_entries(tmp_path: Path) -> None:
    path = tmp_path / "dup.trec"
    path.write_text("q1 Q0 d1 1 1.0 t\nq1 Q0 d1 2 0.5 t\n")
    with pytest.raises(ResRankError, match=r"dup\.trec:2: duplicate document 'd1'"):
        read_trec_run(path)
    path.write_text("q1 Q0 d1 1 high t\n")
    with pytest.raises(ResRankError, match=r":1: score 'high' is not a number"):
        read_trec_run(path)


def test_qrels_trec_and_beir_formats(tmp_path: Path) -> None:
    trec = tmp_path / "q.txt"
    trec.write_text("1 0 a 2\n1 0 b 0\n2 0 c 1\n")
    assert read_trec_qrels(trec) == {"1": {"a": 2, "b": 0}, "2": {"c": 1}}
    beir = tmp_path / "q.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n")
    assert read_trec_qrels(beir) == {"1": {"a": 1}}
    bad = tmp_path / "bad.txt"
    bad.write_text("1 0 a x\n")
    with pytest.raises(ResRankError, match=r"bad\.txt:1: relevance 'x'"):
        read_trec_qrels(bad)


def test_non_utf8_and_malformed_jsonl(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(ResRankError, match=r"latin\.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(latin))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ResRankError, match=r"broken\.jsonl:3: malformed JSON line"):
        list(iter_jsonl(broken))


def test_writer_refuses_non_finite_scores_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    with pytest.raises(ResRankError, match="score nan"):
        write_trec_run(path, {"q": {"a": 1.0, "b": float("nan")}}, tag="t")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_previous_content_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(ResRankError, match="file not found"):
        read_trec_run(tmp_path / "nope.trec")
