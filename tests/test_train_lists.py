"""Training-list construction: candidates, labels, inserted positives, hard negatives, teacher files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resrank.data.types import Candidate, CandidateList, Dataset, Passage, Query
from resrank.errors import ResRankError
from resrank.train.lists import TrainingList, build_lists, read_lists, read_teacher_lists, write_lists


def _corpus(n: int = 12) -> dict[str, Passage]:
    return {f"d{i}": Passage(f"d{i}", f"text {i}", f"title {i}") for i in range(n)}


def _run() -> dict[str, dict[str, float]]:
    ranked = {
        "q1": ["d0", "d1", "d2", "d3", "d4", "d5"],
        "q2": ["d0", "d1", "d2", "d3", "d4", "d5", "d6"],  # relevant d6 below the cut
        "q3": ["d0", "d1"],  # no relevant judgement
        "q5": ["d3", "d4", "d5", "d7", "d8"],  # relevant d9 only in the corpus
        "q6": ["d1", "d2"],  # relevant doc has no text anywhere
    }
    return {q: {d: 10.0 - r for r, d in enumerate(docs)} for q, docs in ranked.items()}


def _dataset() -> Dataset:
    queries = [Query(q, f"query {q}") for q in ("q1", "q2", "q3", "q4", "q5", "q6")]
    qrels = {
        "q1": {"d1": 2, "d3": 1, "d0": 0},
        "q2": {"d6": 1, "d0": 0},
        "q3": {"d0": 0},
        "q4": {"d2": 1},  # no candidates
        "q5": {"d9": 2, "d3": 0},
        "q6": {"missing": 1},
    }
    return Dataset("toy", queries, qrels, corpus=_corpus())


def test_qrels_lists_labels_positives_and_hard_negatives() -> None:
    lists = build_lists(_dataset(), _run(), list_size=4, hard_negatives=2, labels="qrels", seed=1)
    by_qid = {tl.query.qid: tl for tl in lists}
    assert sorted(by_qid) == ["q1", "q2", "q5"]  # q3 unjudged-relevant, q4 no candidates, q6 no text

    q1 = by_qid["q1"]
    assert [p.docid for p in q1.passages] == ["d0", "d1", "d2", "d3"]
    assert q1.labels == [0.0, 2.0, 0.0, 1.0]
    assert q1.positives == [1, 3]
    assert q1.hard_negatives == [0, 2]  # best-ranked non-relevant / unjudged
    assert q1.passages[1].contents == "title 1\ntext 1"


def test_missing_positive_is_inserted_replacing_the_last_candidate() -> None:
    lists = build_lists(_dataset(), _run(), list_size=4, hard_negatives=3, labels="qrels", seed=1)
    by_qid = {tl.query.qid: tl for tl in lists}
    for qid, relevant, pool in (("q2", "d6", ["d0", "d1", "d2"]), ("q5", "d9", ["d3", "d4", "d5"])):
        tl = by_qid[qid]
        docids = [p.docid for p in tl.passages]
        assert len(docids) == 4
        assert [d for d in docids if d != relevant] == pool  # last candidate dropped, order kept
        assert tl.positives == [docids.index(relevant)]
        assert sum(1 for x in tl.labels if x > 0) == 1
        assert tl.hard_negatives == [i for i in range(4) if i != tl.positives[0]]

    again = build_lists(_dataset(), _run(), list_size=4, hard_negatives=3, labels="qrels", seed=1)
    assert [tl.to_dict() for tl in again] == [tl.to_dict() for tl in lists]
    positions = {seed: build_lists(_dataset(), _run(), 4, 3, "qrels", seed=seed)[1].positives[0] for seed in range(12)}
    assert len(set(positions.values())) > 1  # the slot is random, not fixed


def test_extra_lists_per_query_are_seeded_draws_from_the_whole_first_stage_list() -> None:
    queries = [Query("q1", "query one")]
    docs = [f"d{j}" for j in range(40)]
    qrels = {"q1": {"d3": 2, "d17": 1, "d31": 1, "d5": 0}}
    dataset = Dataset("toy", queries, qrels, corpus={d: Passage(d, f"text {d}") for d in docs})
    run = {"q1": {d: 100.0 - r for r, d in enumerate(docs)}}
    lists = build_lists(dataset, run, list_size=6, hard_negatives=2, seed=4, lists_per_query=5)
    assert len(lists) == 5
    assert [p.docid for p in lists[0].passages] == docs[:6]  # the top list comes first, unchanged
    drawn = [[p.docid for p in tl.passages] for tl in lists]
    assert len({tuple(d) for d in drawn}) == 5  # five different lists
    for tl, ids in zip(lists, drawn, strict=True):
        assert len(ids) == 6 and len(set(ids)) == 6
        assert ids == sorted(ids, key=docs.index)  # first-stage order kept
        assert tl.labels == [float(max(qrels["q1"].get(d, 0), 0)) for d in ids]
        assert tl.positives and all(tl.labels[i] > 0 for i in tl.positives)
        assert tl.hard_negatives == [i for i, g in enumerate(tl.labels) if g == 0][:2]
    assert any(max(docs.index(d) for d in ids) >= 6 for ids in drawn[1:])  # reaches below the top list
    again = build_lists(dataset, run, list_size=6, hard_negatives=2, seed=4, lists_per_query=5)
    assert [tl.to_dict() for tl in again] == [tl.to_dict() for tl in lists]
    assert [tl.to_dict() for tl in build_lists(dataset, run, 6, 2, seed=4)] == [lists[0].to_dict()]


def test_lists_from_precomputed_candidates_one_positive_each() -> None:
    """Embedded-style data: one relevant passage per query -> lists of list_size, one positive."""
    queries = [Query(f"q{i}", f"query {i}") for i in range(5)]
    candidates = [
        CandidateList(q, [Candidate(f"d{j}", 1.0 / (j + 1), text=f"text {j}") for j in range(10)]) for q in queries
    ]
    qrels = {f"q{i}": {f"d{2 * i}": 1} for i in range(5)}  # d8 is below a list_size of 6 for q4
    ds = Dataset("embedded-like", queries, qrels, corpus=None, candidates=candidates)
    lists = build_lists(ds, None, list_size=6, hard_negatives=3, labels="qrels", seed=0)
    assert len(lists) == 5
    for tl in lists:
        assert len(tl.passages) == 6
        assert len(tl.positives) == 1
        assert tl.passages[tl.positives[0]].docid == next(iter(qrels[tl.query.qid]))
        assert len(tl.hard_negatives) == 3 and tl.positives[0] not in tl.hard_negatives


def test_run_over_a_candidate_file_set_takes_texts_from_the_candidates() -> None:
    # DL21-like: no corpus, texts only in the candidate file, and the DAG's run re-ranks it.
    queries = [Query(f"q{i}", f"query {i}") for i in range(3)]
    candidates = [
        CandidateList(q, [Candidate(f"d{j}", 1.0 / (j + 1), text=f"text {j}") for j in range(5)]) for q in queries
    ]
    ds = Dataset("dl21-like", queries, {f"q{i}": {f"d{i}": 2} for i in range(3)}, corpus=None, candidates=candidates)
    run = {q.qid: {f"d{j}": float(10 - j) for j in range(5)} for q in queries}
    lists = build_lists(ds, run, list_size=4, hard_negatives=2, labels="qrels", seed=0)
    assert [tl.query.qid for tl in lists] == ["q0", "q1", "q2"]
    assert lists[1].texts[:2] == ["text 0", "text 1"]
    assert lists[1].positives == [1]
    assert [tl.to_dict() for tl in lists] == [tl.to_dict() for tl in build_lists(ds, None, 4, 2, seed=0)]


def test_no_run_and_no_candidates_is_a_clear_error() -> None:
    with pytest.raises(ResRankError, match="no first-stage run"):
        build_lists(_dataset(), None, 4, 2)
    with pytest.raises(ResRankError, match="teacher permutation file"):
        build_lists(_dataset(), _run(), 4, 2, labels="teacher")


def test_teacher_jsonl_labels_follow_teacher_order(tmp_path: Path) -> None:
    path = tmp_path / "teacher.jsonl"
    rows = [
        {
            "query": "what is x",
            "hits": [
                {"qid": 7, "docid": "b", "content": "B", "score": 1.0},
                {"qid": 7, "docid": "a", "content": "A", "score": 3.0},
                {"qid": 7, "docid": "c", "content": "C", "score": 2.0},
                {"qid": 7, "docid": "d", "content": "D", "score": 0.5},
            ],
        },
        {"query": {"text": "judged query", "qid": "j1"}, "hits": [{"docid": "x", "content": "X"}, {"docid": "y"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    lists = read_teacher_lists(path, list_size=3, hard_negatives=1, qrels={"j1": {"y": 1}})
    first, second = lists
    assert first.query.qid == "7"
    label_of = {p.docid: label for p, label in zip(first.passages, first.labels, strict=True)}
    assert label_of == {"b": 3.0, "a": 2.0, "c": 1.0}  # the teacher's top 3 (list_size), labelled n - rank
    docid = [p.docid for p in first.passages]
    assert [docid[i] for i in first.positives] == ["b"]  # unjudged query: the teacher's top-1
    assert [docid[i] for i in first.hard_negatives] == ["a"]  # highest first-stage score among the rest
    second_docids = [p.docid for p in second.passages]
    assert [second_docids[i] for i in second.positives] == ["y"]  # judged: qrels decide
    assert sorted(second.labels) == [1.0, 2.0]
    assert dict(zip(second_docids, second.labels, strict=True)) == {"x": 2.0, "y": 1.0}

    ds = Dataset("t", [], {"j1": {"y": 1}})
    via_build = build_lists(ds, None, 3, 1, labels="teacher", teacher_path=path)
    assert [tl.to_dict() for tl in via_build] == [tl.to_dict() for tl in lists]


def test_teacher_lists_hide_the_teacher_order_from_slot_positions(tmp_path: Path) -> None:
    """Shown in teacher order, the label would be readable off the slot index (a position shortcut)."""
    path = tmp_path / "teacher.jsonl"
    rows = [
        {"qid": f"q{k}", "query": f"query {k}",
         "hits": [{"docid": f"d{i}", "content": f"passage {i}", "score": 10.0 - i} for i in range(6)]}
        for k in range(40)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    lists = read_teacher_lists(path, list_size=6, hard_negatives=2, seed=5)
    top_slots = {tl.labels.index(6.0) for tl in lists}
    assert len(top_slots) >= 4  # the teacher's best passage lands in many different slots
    assert sum(tl.labels == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0] for tl in lists) <= 1
    for tl in lists:  # each list is a relabelled permutation of the teacher's list
        assert sorted((p.docid, lab) for p, lab in zip(tl.passages, tl.labels, strict=True)) == [
            (f"d{i}", 6.0 - i) for i in range(6)
        ]
    again = read_teacher_lists(path, list_size=6, hard_negatives=2, seed=5)
    assert [tl.to_dict() for tl in again] == [tl.to_dict() for tl in lists]  # seeded


def test_lists_roundtrip_jsonl(tmp_path: Path) -> None:
    lists = build_lists(_dataset(), _run(), list_size=4, hard_negatives=2, seed=3)
    write_lists(tmp_path / "lists.jsonl", lists)
    assert [tl.to_dict() for tl in read_lists(tmp_path / "lists.jsonl")] == [tl.to_dict() for tl in lists]


def test_training_list_validates_indices() -> None:
    with pytest.raises(ResRankError, match="out of range"):
        TrainingList(Query("q", "t"), [Passage("d", "x")], [1.0], positives=[1])
    with pytest.raises(ResRankError, match="labels"):
        TrainingList(Query("q", "t"), [Passage("d", "x")], [1.0, 0.0], positives=[0])


@pytest.mark.slow
def test_embedded_dataset_gives_full_lists_with_one_positive() -> None:
    from resrank.config import RetrievalConfig
    from resrank.data.embedded import build_embedded
    from resrank.retrieval.bm25 import bm25_retrieve

    ds = build_embedded("train")
    ds.queries = ds.queries[:40]
    run = bm25_retrieve(ds.corpus, ds.queries, RetrievalConfig("bm25s", 0.9, 0.4, 100, True), depth=30)
    lists = build_lists(ds, run, list_size=8, hard_negatives=3, labels="qrels", seed=13)
    assert len(lists) == 40
    for tl in lists:
        assert len(tl.passages) == 8 and len(tl.positives) == 1 and len(tl.hard_negatives) == 3
        assert tl.labels[tl.positives[0]] > 0 and sum(tl.labels) == tl.labels[tl.positives[0]]


def test_unjudged_teacher_lists_prepare_and_train_like_the_paper_profile(tmp_path: Path) -> None:
    """config/paper.yaml's stage 2: a user-supplied teacher JSONL without qrels, via the registry."""
    import yaml

    from resrank.data.prepared import prepare_dataset, read_prepared

    definitions = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/paper.yaml").read_text())[
        "datasets"]["definitions"]
    teacher_file = tmp_path / "data" / definitions["teacher-lists"]["path"]
    teacher_file.parent.mkdir(parents=True)
    rows = [
        {"query": f"query {k}",
         "hits": [{"qid": f"t{k}", "docid": f"d{k}-{i}", "content": f"text {i}", "rank": i + 1, "score": 9.0 - i}
                  for i in range(5)]}
        for k in range(3)
    ]
    teacher_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    manifest = prepare_dataset("teacher-lists", tmp_path / "data", tmp_path / "prep", definitions)
    assert manifest["available"] and manifest["counts"]["judgements"] == 0
    dataset = read_prepared(tmp_path / "prep")
    lists = build_lists(dataset, None, 4, 2, labels="teacher", teacher_path=tmp_path / "prep" / "candidates.jsonl")
    assert len(lists) == 3
    for k, tl in enumerate(lists):
        assert dict(zip([p.docid for p in tl.passages], tl.labels, strict=True)) == {
            f"d{k}-{i}": 4.0 - i for i in range(4)
        }
