"""Training lists: one query, its first-stage candidates, and a label per candidate.

Two label sources (``StageConfig.labels``):

* ``"qrels"``: candidates are the top ``list_size`` of the BM25 run (or the dataset's
  precomputed candidates), labels are qrels grades (unjudged = 0, negative grades = 0).
  Every list gets at least one relevant passage: when none of the top ``list_size`` is
  judged relevant, the best judged-relevant passage (highest grade, then best first-stage
  rank, then docid) replaces the last non-relevant candidate (or is added, when fewer
  than ``list_size`` candidates have text) at a random position (a fixed slot would
  teach the reranker a position shortcut). Queries with no relevant
  judgement, or whose relevant passages have no text, are skipped.
* ``"teacher"``: a RankGPT / rank_llm style JSONL, one ``{"query", "hits": [...]}`` per
  line with the hits already in the teacher's order; label of rank ``r`` (0-based) is
  ``n - r``. The reranker sees the passages in a seeded random order: the file keeps no
  first-stage order (RankGPT rewrites ``rank`` and ``score`` to follow the permutation),
  and lists shown in the teacher's order would teach the model to read the answer off
  the slot positions (RankZephyr shuffles its teacher lists for the same reason).

Qrels lists keep first-stage order (the order the reranker sees at inference). With
``lists_per_query > 1`` (a stage's ``upsample`` with ``resample``) a query gets its top list
plus draws of ``list_size`` candidates from its whole first-stage list, still in first-stage
order and with at least one relevant passage, so an upsampled small dataset (DL21 judges
about half of each top-100) shows new judgements instead of the same list again. Hard
negatives for InfoNCE are indices into the list: the highest-ranked first-stage candidates
that are not positives (non-relevant or unjudged). Everything random is drawn from a
``random.Random`` seeded with ``(seed, qid)``, so a list does not depend on which other
queries were built with it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from resrank.data.types import Candidate, Dataset, Passage, Qrels, Query, Run
from resrank.errors import ResRankError
from resrank.io import iter_jsonl, write_jsonl
from resrank.train.losses import labels_from_order

LabelSource = Literal["qrels", "teacher"]


@dataclass
class TrainingList:
    """One training example: a query and its candidate list with labels.

    ``positives`` are indices of passages with label > 0 for qrels lists; for teacher lists
    they are the judged-relevant passages when qrels are known, else the teacher's top-1.
    ``hard_negatives`` are indices of non-positive passages, best first-stage rank first.
    """

    query: Query
    passages: list[Passage]
    labels: list[float]
    positives: list[int]
    hard_negatives: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.passages)
        if len(self.labels) != n:
            raise ResRankError(f"training list {self.query.qid!r}: {n} passages but {len(self.labels)} labels")
        bad = [i for i in [*self.positives, *self.hard_negatives] if not 0 <= i < n]
        if bad:
            raise ResRankError(f"training list {self.query.qid!r}: passage indices {bad} out of range 0..{n - 1}")

    @property
    def texts(self) -> list[str]:
        return [p.contents for p in self.passages]

    def to_dict(self) -> dict[str, Any]:
        return {
            "qid": self.query.qid,
            "query": self.query.text,
            "passages": [{"docid": p.docid, "title": p.title, "text": p.text} for p in self.passages],
            "labels": self.labels,
            "positives": self.positives,
            "hard_negatives": self.hard_negatives,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> TrainingList:
        return cls(
            query=Query(str(obj["qid"]), str(obj["query"])),
            passages=[
                Passage(str(p["docid"]), str(p.get("text", "")), str(p.get("title", ""))) for p in obj["passages"]
            ],
            labels=[float(x) for x in obj["labels"]],
            positives=[int(i) for i in obj["positives"]],
            hard_negatives=[int(i) for i in obj.get("hard_negatives", [])],
        )


def build_lists(
    dataset: Dataset,
    run: Run | None,
    list_size: int,
    hard_negatives: int,
    labels: LabelSource = "qrels",
    seed: int = 13,
    teacher_path: str | Path | None = None,
    lists_per_query: int = 1,
) -> list[TrainingList]:
    """Training lists for one dataset (see the module docstring for the rules).

    Args:
        dataset: queries, qrels and passage texts (corpus and/or precomputed candidates).
        run: first-stage run (qid -> docid -> score); None uses ``dataset.candidates``.
        list_size: passages per list (top of the first stage).
        hard_negatives: how many hard-negative indices to record per list.
        labels: "qrels" (graded judgements) or "teacher" (needs ``teacher_path``).
        seed: makes insertion positions reproducible.
        teacher_path: RankGPT-style JSONL in teacher order, for ``labels="teacher"``.
        lists_per_query: qrels lists only: the top list plus ``lists_per_query - 1`` draws
            (``_drawn_list``), so an upsampled small dataset shows more distinct judgements.
    """
    if list_size < 1:
        raise ResRankError(f"build_lists: list_size must be >= 1, got {list_size}")
    if labels == "teacher":
        if teacher_path is None:
            raise ResRankError(
                f"dataset {dataset.name!r}: labels 'teacher' need a teacher permutation file "
                "(RankGPT-style JSONL of {'query', 'hits'} in teacher order)"
            )
        return read_teacher_lists(teacher_path, list_size, hard_negatives, qrels=dataset.qrels, seed=seed)
    if labels != "qrels":
        raise ResRankError(f"build_lists: unknown label source {labels!r}; use 'qrels' or 'teacher'")
    ranked = _ranked_candidates(dataset, run)
    out: list[TrainingList] = []
    for query in dataset.queries:
        judged = dataset.qrels.get(query.qid, {})
        relevant = {d: g for d, g in judged.items() if g > 0}
        cands = ranked.get(query.qid, [])
        if not relevant or not cands or not query.text.strip():
            continue
        texted = [c for c in cands if c.text or c.title or c.docid in (dataset.corpus or {})]
        passages = [_passage(c, dataset.corpus) for c in texted]
        top = passages[:list_size]
        if not any(p.docid in relevant for p in top):
            best = _best_relevant(relevant, passages, dataset.corpus)
            if best is None:
                continue
            rng = random.Random(f"{seed}:{query.qid}")
            if len(top) >= list_size:
                top = top[: list_size - 1]  # all non-relevant here, so this drops the last non-relevant
            top.insert(rng.randrange(len(top) + 1), best)
        lists = [top]
        for draw in range(1, lists_per_query):
            lists.append(_drawn_list(passages, relevant, list_size, random.Random(f"{seed}:{query.qid}:{draw}"), top))
        for chosen in lists:
            grades = [float(max(judged.get(p.docid, 0), 0)) for p in chosen]
            positives = [i for i, g in enumerate(grades) if g > 0]
            negatives = [i for i, g in enumerate(grades) if g <= 0][:hard_negatives]
            out.append(TrainingList(query, chosen, grades, positives, negatives))
    return out


def _drawn_list(
    passages: list[Passage], relevant: Mapping[str, int], list_size: int, rng: random.Random, top: list[Passage]
) -> list[Passage]:
    """``list_size`` candidates drawn from the whole first-stage list, kept in first-stage order,
    with at least one relevant passage (the top list's own when the candidates hold none)."""
    if len(passages) <= list_size:
        return list(top)
    picked = sorted(rng.sample(range(len(passages)), list_size))
    if not any(passages[i].docid in relevant for i in picked):
        relevant_at = [i for i, p in enumerate(passages) if p.docid in relevant]
        if not relevant_at:
            return list(top)  # the only relevant passage came from outside the candidates
        picked[rng.randrange(list_size)] = rng.choice(relevant_at)  # none was relevant: no duplicate
        picked.sort()
    return [passages[i] for i in picked]


def read_teacher_lists(
    path: str | Path,
    list_size: int,
    hard_negatives: int,
    qrels: Qrels | None = None,
    seed: int = 13,
) -> list[TrainingList]:
    """Lists from a teacher-ordered JSONL (RankGPT ``{"query", "hits"}`` / rank_llm hits).

    Each hit needs ``docid`` and ``content`` (or ``text`` / ``title``). The teacher's top
    ``list_size`` hits are kept, labelled ``n - rank``, and presented in an order drawn
    from ``random.Random((seed, qid))`` so that slot positions carry no teacher signal. Positives are
    the hits judged relevant in ``qrels`` when the query is judged there, else the
    teacher's top-1. Hard negatives are the non-positive hits with the highest first-stage
    ``score`` when every hit carries one, else the next hits in teacher order.
    """
    out: list[TrainingList] = []
    for lineno, obj in iter_jsonl(path):
        query_obj, hits = obj.get("query"), obj.get("hits")
        if query_obj is None or not isinstance(hits, list):
            raise ResRankError(f"{path}:{lineno}: expected {{'query': ..., 'hits': [...]}} in teacher order")
        if isinstance(query_obj, dict):
            text, qid = str(query_obj.get("text", "")), query_obj.get("qid")
        else:
            text, qid = str(query_obj), None
        qid = obj.get("qid", qid)
        if qid is None and hits:
            qid = hits[0].get("qid")
        qid = str(qid) if qid is not None else f"teacher-{lineno}"
        hits = hits[:list_size]
        if not hits or not text.strip():
            continue
        try:
            passages = [
                Passage(str(h["docid"]), str(h.get("content", h.get("text", ""))), str(h.get("title", "")))
                for h in hits
            ]
        except (KeyError, AttributeError):
            raise ResRankError(f"{path}:{lineno}: every hit needs a 'docid' and 'content'") from None
        n = len(passages)
        lab = labels_from_order(list(range(n)))
        judged = (qrels or {}).get(qid)
        positives = [i for i, p in enumerate(passages) if judged.get(p.docid, 0) > 0] if judged else []
        positives = positives or [0]
        rest = [i for i in range(n) if i not in positives]
        if all(isinstance(h.get("score"), (int, float)) for h in hits):
            rest.sort(key=lambda i: -float(hits[i]["score"]))
        shown = list(range(n))
        random.Random(f"{seed}:{qid}").shuffle(shown)  # shown[k] = teacher index of slot k
        slot_of = {teacher_index: slot for slot, teacher_index in enumerate(shown)}
        out.append(
            TrainingList(
                Query(qid, text),
                [passages[i] for i in shown],
                [lab[i] for i in shown],
                sorted(slot_of[i] for i in positives),
                [slot_of[i] for i in rest[:hard_negatives]],
            )
        )
    return out


def write_lists(path: str | Path, lists: Iterable[TrainingList]) -> None:
    """Save lists as JSONL (one list per line), atomically, so a DAG step can hand them on."""
    write_jsonl(path, (tl.to_dict() for tl in lists))


def read_lists(path: str | Path) -> list[TrainingList]:
    out = []
    for lineno, obj in iter_jsonl(path):
        try:
            out.append(TrainingList.from_dict(obj))
        except (KeyError, TypeError, ValueError) as err:
            raise ResRankError(f"{path}:{lineno}: malformed training list ({err})") from None
    return out


def _ranked_candidates(dataset: Dataset, run: Run | None) -> dict[str, list[Candidate]]:
    """qid -> candidates best first, from the run (texts looked up later) or the dataset."""
    if run is not None:
        # A run carries no texts: take them from the candidate files when there is no corpus.
        texts = {(cl.query.qid, c.docid): c for cl in dataset.candidates or [] for c in cl.candidates}
        return {
            qid: [
                Candidate(d, s, *_text_of(texts.get((qid, d))))
                for d, s in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            ]
            for qid, docs in run.items()
        }
    if dataset.candidates is None:
        raise ResRankError(
            f"dataset {dataset.name!r}: no first-stage run given and no precomputed candidates; "
            "run BM25 first (resrank retrieve) or supply a candidate file"
        )
    return {cl.query.qid: list(cl.candidates) for cl in dataset.candidates}


def _text_of(cand: Candidate | None) -> tuple[str, str]:
    return (cand.text, cand.title) if cand is not None else ("", "")


def _passage(cand: Candidate, corpus: Mapping[str, Passage] | None) -> Passage:
    if cand.text or cand.title:
        return Passage(cand.docid, cand.text, cand.title)
    assert corpus is not None
    return corpus[cand.docid]


def _best_relevant(
    relevant: Mapping[str, int], ranked: list[Passage], corpus: Mapping[str, Passage] | None
) -> Passage | None:
    """Highest-graded relevant passage with text; ties to the better first-stage rank, then docid."""
    position = {p.docid: i for i, p in enumerate(ranked)}
    by_id = {p.docid: p for p in ranked}
    options = []
    for docid, grade in relevant.items():
        passage = by_id.get(docid) or (corpus or {}).get(docid)
        if passage is not None:
            options.append((-grade, position.get(docid, len(ranked)), docid, passage))
    if not options:
        return None
    return min(options, key=lambda o: o[:3])[3]
