"""Trainer on tiny random ResRank models: overfitting, resume, phases, freezing, guards, checkpoints."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import resrank.train.trainer as trainer
from resrank.config import ResRankConfig, resolve
from resrank.data.types import Passage, Query
from resrank.errors import ResRankError
from resrank.model.encoder import Encoder
from resrank.train.lists import TrainingList
from resrank.train.trainer import build_model, stage_fingerprint, train, train_stage

pytestmark = pytest.mark.slow

TOPICS = [
    "python list sort order",
    "http server request handler",
    "json decode string object",
    "thread lock acquire release",
]
DOCS = [
    ["sort the list in place ascending", "open a socket connection", "parse csv rows", "compute md5 hash"],
    ["handle http get requests on a server", "sort items", "read zip archive", "format a date"],
    ["decode a json document to python objects", "base64 encode bytes", "random choice", "copy a file tree"],
    ["acquire and release a threading lock", "json encoder class", "email header parse", "gzip compress data"],
]


class _Killed(Exception):
    """Stands in for a job killed mid-stage."""


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESRANK_NO_PROGRESS", "1")


def toy_lists() -> list[TrainingList]:
    """4 queries x 4 passages; the relevant passage sits at a different slot each time.

    Query 0 also has a partially relevant passage (grade 1) so RankNet pair counts differ
    between lists (which the accumulation test relies on).
    """
    out = []
    for i, (query, docs) in enumerate(zip(TOPICS, DOCS, strict=True)):
        pos = i % 4
        texts = [*docs[1 : pos + 1], docs[0], *docs[pos + 1 :]]
        labels = [2.0 if j == pos else 0.0 for j in range(4)]
        if i == 0:
            labels[3] = 1.0
        positives = [j for j in range(4) if labels[j] > 0]
        negatives = [j for j in range(4) if labels[j] == 0][:2]
        passages = [Passage(f"d{i}{j}", text) for j, text in enumerate(texts)]
        out.append(TrainingList(Query(f"q{i}", query), passages, labels, positives, negatives))
    return out


def make_cfg(
    reranker: str = "tiny-bert", stage: dict[str, Any] | None = None, stages: int = 1, **train: Any
) -> ResRankConfig:
    stage_cfg = {
        "datasets": ["toy"],
        "steps": 6,
        "lr": 1e-3,
        "warmup_ratio": 0.0,
        "weight_decay": 0.01,
        "queries_per_step": 4,
        "grad_accum": 1,
        "list_size": 4,
        "hard_negatives": 2,
        "checkpoint_every": 3,
        **(stage or {}),
    }
    names = [f"s{i + 1}" for i in range(stages)]
    return resolve(
        {
            "profile": "test",
            "seed": 7,
            "encoder": {"model": "tiny-bert", "max_length": 32, "query_max_length": 16},
            "reranker": {"model": reranker, "max_query_length": 16, "depth": 8},
            "train": {"stage_order": names, "stages": dict.fromkeys(names, stage_cfg), **train},
        }
    )


def read_log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / trainer.LOG_FILE).read_text().splitlines()]


def ndcg_at_10(scores: torch.Tensor, lists: list[TrainingList]) -> float:
    """Mean nDCG@10 with linear gains, computed directly (no library)."""
    values = []
    for row, tl in zip(scores, lists, strict=True):
        order = sorted(range(len(tl.labels)), key=lambda i: -float(row[i]))[:10]
        dcg = sum(tl.labels[i] / math.log2(r + 2) for r, i in enumerate(order))
        ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(tl.labels, reverse=True)[:10]))
        values.append(dcg / ideal)
    return sum(values) / len(values)


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / trainer.WEIGHTS_FILE if path.is_dir() else path))


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str, inside: bool = True) -> bool:
    keys = [k for k in a if k.startswith(prefix) == inside]
    assert keys
    return any(not torch.equal(a[k], b[k]) for k in keys)


def init_file(cfg: ResRankConfig, tmp_path: Path) -> Path:
    """A saved untrained model, so tests can compare trained weights against the start."""
    torch.manual_seed(0)
    path = tmp_path / "init.safetensors"
    build_model(cfg).save_checkpoint(path)
    return path


# ---------------------------------------------------------------------------------------------


def test_tiny_model_overfits_toy_set(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"steps": 16, "checkpoint_every": 5})
    lists = toy_lists()
    out = train_stage(cfg, cfg.train.stages[0], {"toy": lists}, tmp_path / "s1")
    assert out == tmp_path / "s1"
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 17))
    assert log[-1]["loss"] <= 0.5 * log[0]["loss"]
    assert all(r["retrieval_loss"] is not None and r["rank_loss"] is not None for r in log)
    assert {"step", "stage", "loss", "rank_loss", "retrieval_loss", "lr", "grad_norm", "elapsed"} <= set(log[0])

    model = build_model(cfg, out).eval()
    with torch.no_grad():
        scores = model.score_texts([tl.query.text for tl in lists], [tl.texts for tl in lists]).scores
    assert ndcg_at_10(scores, lists) == pytest.approx(1.0)

    state = json.loads((out / trainer.STATE_FILE).read_text())
    assert state["step"] == 16 and state["stage"] == "s1"
    assert state["fingerprint"] == stage_fingerprint(cfg, cfg.train.stages[0], lists, None)
    assert state["config_fingerprint"] == cfg.fingerprint()
    assert json.loads((out / trainer.DONE_FILE).read_text())["fingerprint"] == state["fingerprint"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith((".tmp", trainer.CHECKPOINT_PREFIX))]
    assert leftovers == []  # checkpoints replaced by the final weights, nothing half-written


def test_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(stage={"steps": 6, "checkpoint_every": 3, "grad_accum": 2})
    stage = cfg.train.stages[0]
    lists = {"toy": toy_lists()}
    full = train_stage(cfg, stage, lists, tmp_path / "full")

    original = trainer._optimizer_step
    calls: list[int] = []
    kill = [True]

    def killed_at_5(*args: Any, **kwargs: Any) -> dict[str, Any]:
        step = args[5]
        calls.append(step)
        if step == 5 and kill[0]:
            raise _Killed("job killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "_optimizer_step", killed_at_5)
    part = tmp_path / "part"
    with pytest.raises(_Killed):
        train_stage(cfg, stage, lists, part)
    names = sorted(p.name for p in part.iterdir())
    assert names == ["checkpoint-0000003", trainer.LOG_FILE]  # atomic: no tmp folder, no DONE
    ckpt = part / "checkpoint-0000003"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors",
        "optimizer.pt",
        "rng_state.pt",
        "trainer_state.json",
    ]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["stage"] == "s1" and state["phase"] == "joint"
    assert state["fingerprint"] == stage_fingerprint(cfg, stage, lists["toy"], None)
    assert [r["step"] for r in read_log(part)] == [1, 2, 3, 4]

    calls.clear()
    kill[0] = False
    train_stage(cfg, stage, lists, part)
    assert calls == [4, 5, 6]  # resumed, not restarted
    resumed, uninterrupted = read_log(part), read_log(full)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(resumed[3:], uninterrupted[3:], strict=True):
        for key in ("loss", "rank_loss", "retrieval_loss", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    wa, wb = weights(part), weights(full)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_gradient_accumulation_matches_full_batch(tmp_path: Path) -> None:
    records = []
    for accum in (1, 3):
        cfg = make_cfg(stage={"steps": 1, "grad_accum": accum}, lambda_retrieval=0.0)
        out = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / f"ga{accum}")
        records.append(read_log(out)[0])
    full, accumulated = records
    assert accumulated["rank_loss"] == pytest.approx(full["rank_loss"], rel=1e-5)
    assert accumulated["grad_norm"] == pytest.approx(full["grad_norm"], rel=1e-4)


def test_separate_mode_trains_encoder_then_reranker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(reranker="tiny-qwen3-h48", stage={"steps": 3}, mode="separate")  # mlp projector
    original = trainer._optimizer_step
    seen: list[tuple[str, bool, bool]] = []

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        model, phase = args[0], args[4]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        record = original(*args, **kwargs)
        after = model.state_dict()
        seen.append((phase, changed(before, after, "encoder."), changed(before, after, "encoder.", inside=False)))
        return record

    monkeypatch.setattr(trainer, "_optimizer_step", spy)
    out = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "sep")
    assert seen == [("encoder", True, False)] * 3 + [("reranker", False, True)] * 3
    log = read_log(out)
    assert [r["phase"] for r in log] == ["encoder"] * 3 + ["reranker"] * 3
    assert all(r["rank_loss"] is None and r["retrieval_loss"] is not None for r in log[:3])
    assert all(r["rank_loss"] is not None and r["retrieval_loss"] is None for r in log[3:])
    assert any(k.startswith("projector.") for k in weights(out))


def test_lambda_zero_drops_retrieval_loss_but_ranking_trains_encoder(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"steps": 2}, lambda_retrieval=0.0)
    init = init_file(cfg, tmp_path)
    out = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "l0", init_checkpoint=init)
    assert all(r["retrieval_loss"] is None for r in read_log(out))
    assert changed(weights(init), weights(out), "encoder.")
    assert changed(weights(init), weights(out), "reranker.")


def test_frozen_encoder_stays_unchanged(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"steps": 2}, train_encoder=False)
    init = init_file(cfg, tmp_path)
    out = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "frozen", init_checkpoint=init)
    assert not changed(weights(init), weights(out), "encoder.")
    assert changed(weights(init), weights(out), "reranker.")
    assert all(r["retrieval_loss"] is None for r in read_log(out))


def test_stage_override_freezes_encoder_and_embeds_each_passage_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(stage={"steps": 4, "train_encoder": False})
    assert cfg.train.train_encoder and cfg.train.stages[0].train_encoder is False
    init = init_file(cfg, tmp_path)
    embedded: list[str] = []
    original = trainer.FrozenEmbeddings.__call__

    def spy(self: Any, texts: list[str]) -> torch.Tensor:
        embedded.extend(t for t in dict.fromkeys(texts) if t not in self.vectors)
        return original(self, texts)

    monkeypatch.setattr(trainer.FrozenEmbeddings, "__call__", spy)
    lists = toy_lists()
    out = train_stage(cfg, cfg.train.stages[0], {"toy": lists}, tmp_path / "s1", init_checkpoint=init)
    assert not changed(weights(init), weights(out), "encoder.")
    assert changed(weights(init), weights(out), "reranker.")
    # 4 steps x 4 queries visit every list more than once, yet each text is embedded once
    assert sorted(embedded) == sorted({t for tl in lists for t in tl.texts})

    # the memo changes the cost, not the result: same losses as re-embedding every step
    monkeypatch.setattr(trainer, "FrozenEmbeddings", lambda *args: None)
    again = train_stage(cfg, cfg.train.stages[0], {"toy": lists}, tmp_path / "nomemo", init_checkpoint=init)
    for a, b in zip(read_log(out), read_log(again), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


def test_frozen_stages_share_the_initial_encoders_embeddings_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(stage={"steps": 3, "train_encoder": False})
    other = make_cfg(stage={"steps": 3, "train_encoder": False}, mode="separate")  # same frozen stage 1
    init = init_file(cfg, tmp_path)
    encoded: list[int] = []
    original = Encoder.encode

    def spy(self: Any, texts: list[str], kind: str, batch_size: int | None = None) -> torch.Tensor:
        encoded.append(len(texts))
        return original(self, texts, kind, batch_size)

    monkeypatch.setattr(Encoder, "encode", spy)
    lists, cache = toy_lists(), tmp_path / "cache"
    first = train_stage(cfg, cfg.train.stages[0], {"toy": lists}, tmp_path / "a", init, embedding_cache=cache)
    second = train_stage(other, other.train.stages[0], {"toy": lists}, tmp_path / "b", init, embedding_cache=cache)
    assert encoded == [len({t for tl in lists for t in tl.texts})]  # the second stage read them from disk
    assert [r["loss"] for r in read_log(first)] == [r["loss"] for r in read_log(second)]
    assert weights(first).keys() == weights(second).keys()
    assert all(torch.equal(weights(first)[k], weights(second)[k]) for k in weights(first))


def test_upsample_repeats_a_datasets_lists_in_each_epoch() -> None:
    cfg = make_cfg(stage={"datasets": ["toy", "big"], "upsample": {"toy": 3}})
    toy, big = toy_lists()[:1], toy_lists()
    pool = trainer._stage_pool(cfg.train.stages[0], {"toy": toy, "big": big})
    assert [tl.query.qid for tl in pool].count(toy[0].query.qid) == 3 + 1  # 3 from "toy", 1 from "big"
    assert len(pool) == 3 + len(big)
    ignored = make_cfg(stage={"datasets": ["big"], "upsample": {"toy": 3}})  # inherited, not used here
    assert len(trainer._stage_pool(ignored.train.stages[0], {"big": big})) == len(big)


def test_resampled_upsampling_takes_the_drawn_lists_once_each() -> None:
    """With ``resample`` the N lists of a query were built as N different draws: no repeats here."""
    cfg = make_cfg(stage={"datasets": ["toy", "big"], "upsample": {"toy": 3}, "resample": True})
    toy, big = toy_lists()[:3], toy_lists()
    assert cfg.train.stages[0].draws_upsampled_lists
    assert len(trainer._stage_pool(cfg.train.stages[0], {"toy": toy, "big": big})) == len(toy) + len(big)
    teacher = make_cfg(stage={"datasets": ["toy"], "upsample": {"toy": 3}, "resample": True, "labels": "teacher"})
    assert not teacher.train.stages[0].draws_upsampled_lists  # teacher lists are fixed: repeated instead
    assert len(trainer._stage_pool(teacher.train.stages[0], {"toy": toy})) == 3 * len(toy)


def test_autoregressive_listmle_trains(tmp_path: Path) -> None:
    cfg = make_cfg(
        reranker="tiny-qwen3", stage={"steps": 8, "checkpoint_every": 10}, rank_loss="listmle", lambda_retrieval=0.0
    )
    out = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "ar")
    log = read_log(out)
    assert log[-1]["rank_loss"] < log[0]["rank_loss"]


def test_non_finite_loss_names_stage_and_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(stage={"steps": 4})
    original = trainer.ranknet
    calls = []

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer, "ranknet", poisoned)
    with pytest.raises(ResRankError, match=r"non-finite loss at s1 step 3: .*lower the learning rate"):
        train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "nan")
    assert not (tmp_path / "nan" / trainer.DONE_FILE).exists()


def test_infinite_learning_rate_is_caught(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"steps": 3})
    stage = replace(cfg.train.stages[0], lr=float("inf"))
    with pytest.raises(ResRankError, match=r"non-finite (loss|gradient norm) at s1 step 2"):
        train_stage(cfg, stage, {"toy": toy_lists()}, tmp_path / "inf")


def test_train_chains_stages_and_skips_completed_ones(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"steps": 2}, stages=2)
    lists = {"toy": toy_lists()}
    last = train(cfg, lists, tmp_path)
    assert last == tmp_path / "s2"
    s1_state = json.loads((tmp_path / "s1" / trainer.STATE_FILE).read_text())
    s2_state = json.loads((last / trainer.STATE_FILE).read_text())
    assert s2_state["init_checkpoint"] == str(tmp_path / "s1")
    assert s2_state["fingerprint"] == stage_fingerprint(cfg, cfg.train.stages[1], lists["toy"], tmp_path / "s1")
    assert s1_state["fingerprint"] != s2_state["fingerprint"]

    stamp = (last / trainer.WEIGHTS_FILE).stat().st_mtime_ns
    assert train(cfg, lists, tmp_path) == last
    assert (last / trainer.WEIGHTS_FILE).stat().st_mtime_ns == stamp  # already done: not retrained

    changed_cfg = make_cfg(stage={"steps": 2, "lr": 5e-4}, stages=2)
    train_stage(changed_cfg, changed_cfg.train.stages[1], lists, last, tmp_path / "s1")
    new_state = json.loads((last / trainer.DONE_FILE).read_text())
    assert new_state["fingerprint"] != s2_state["fingerprint"]  # another config retrains


def test_bad_stage_inputs_are_clear_errors(tmp_path: Path) -> None:
    cfg = make_cfg(stage={"queries_per_step": 2, "grad_accum": 3})
    with pytest.raises(ResRankError, match="queries_per_step"):
        train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / "a")
    with pytest.raises(ResRankError, match="no training lists for dataset"):
        train_stage(cfg, cfg.train.stages[0], {"other": toy_lists()}, tmp_path / "b")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / trainer.STATE_FILE).write_text("{}")
    (unfinished / trainer.WEIGHTS_FILE).write_bytes(b"")
    ok = make_cfg()
    with pytest.raises(ResRankError, match="has not finished"):
        train_stage(ok, ok.train.stages[0], {"toy": toy_lists()}, tmp_path / "c", init_checkpoint=unfinished)


def test_fit_list_keeps_positives_when_cutting() -> None:
    tl = TrainingList(
        Query("q", "t"),
        [Passage(f"d{i}", f"p{i}") for i in range(6)],
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        positives=[5],
        hard_negatives=[0, 1, 2],
    )
    cut = trainer._fit_list(tl, list_size=3, hard_negatives=1)
    assert [p.docid for p in cut.passages] == ["d0", "d1", "d5"]
    assert cut.positives == [2] and cut.hard_negatives == [0]


def test_same_seed_same_training_different_seed_different_training(tmp_path: Path) -> None:
    """Determinism: a rerun with the same seed repeats every logged value; another seed does not."""
    logs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        cfg = replace(make_cfg(stage={"steps": 3}), seed=seed)
        out = train_stage(cfg, cfg.train.stages[0], {"toy": toy_lists()}, tmp_path / name)
        logs[name] = [(r["loss"], r["grad_norm"]) for r in read_log(out)]
    assert logs["a"] == logs["b"]
    assert logs["a"] != logs["c"]
