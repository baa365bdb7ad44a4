"""Training stages: joint or separate optimisation, checkpoints, resume (method.md §2-3).

One call of ``train_stage`` is one DAG job: it trains one ``StageConfig`` into
``out_dir`` and returns ``out_dir``, which then holds the final ``model.safetensors``
(the whole ``ResRankModel`` state dict, as ``ResRankModel.save_checkpoint`` writes it),
``trainer_state.json``, ``config.json``, the loss log and, written last, the ``DONE``
marker the DAG waits for. ``train`` chains the configured stages, each starting from the
previous stage's folder.

Semantics
---------
* **joint** (the paper): ``L = L_rank + lambda * L_retrieval`` per step. Passages are
  embedded once per micro-batch by the encoder *with* gradient and the same embeddings
  feed the reranker (ranking loss) and InfoNCE (positive + hard negatives), so ranking
  gradients flow through the reranker into the encoder. ``lambda == 0`` skips the
  retrieval term entirely (logged as null). ``train_encoder: false`` freezes the encoder
  (no grad, eval mode) and then also skips the retrieval term, which could only move it.
* **separate** (the "separate training" ablation): *within each stage* two phases, each
  with its own AdamW and schedule and each running the stage's full ``steps`` (so every
  model gets as many updates as in joint training): phase ``encoder`` trains the encoder
  alone with ``L_retrieval`` (reranker and projector untouched; lambda is not applied),
  then phase ``reranker`` freezes the encoder and trains reranker + projector with
  ``L_rank`` on the frozen embeddings. Steps are numbered globally ``1..2*steps`` in logs
  and checkpoints. With ``train_encoder: false`` the encoder phase is skipped.
* **rank loss**: ``ranknet`` on the one-step scores (``ResRankModel.forward``), or
  ``listmle`` on ``teacher_forced_logits`` with the label order (highest label first,
  ties in first-stage order) as the teacher, for the autoregressive variant.
* **one optimizer step** = ``queries_per_step`` lists split into ``grad_accum``
  contiguous micro-batches. Each micro-batch loss is weighted by its share of the step's
  units (valid RankNet pairs, lists for ListMLE, queries for InfoNCE), so the accumulated
  gradient equals the full-batch gradient of the ranking loss. InfoNCE's in-batch
  negatives are those of the micro-batch (as in every accumulation without GradCache).
* **sampling**: step ``s`` takes list positions ``(s-1)*Q .. s*Q-1`` of an endless stream
  of epochs, each epoch a permutation drawn from ``numpy.random.default_rng([seed,
  epoch])``. The sampler is a pure function of (seed, step), so its "state" in a
  checkpoint is the step; the torch/numpy/python RNG states (dropout) are checkpointed.
* **checkpoints**: ``checkpoint-<step>/`` (``model.safetensors`` of the whole
  ``ResRankModel``, ``optimizer.pt``, ``rng_state.pt`` with scheduler and RNG states,
  ``trainer_state.json``) every ``checkpoint_every`` steps, written to a temporary folder
  and renamed; older ones are deleted. A rerun resumes from the newest checkpoint whose
  training fingerprint matches; the final weights + ``DONE`` replace the checkpoints at
  the end (the optimizer state of a 4B model is tens of GB). A rerun whose ``DONE``
  fingerprint matches returns at once.

Process handling lives in ``_Runtime`` only (device, rank, autocast, barrier), so a
later torchrun/accelerate launch changes that class and the gradient all-reduce, not the
loop; files are written by rank 0 only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor, nn

from resrank.config import ResRankConfig, StageConfig
from resrank.errors import ResRankError
from resrank.io import read_json, write_json
from resrank.train.lists import TrainingList
from resrank.train.losses import info_nce, listmle, order_from_labels, ranknet, ranknet_pair_count

log = logging.getLogger(__name__)

NO_PROGRESS_ENV = "RESRANK_NO_PROGRESS"
LOG_FILE = "train_log.jsonl"
DONE_FILE = "DONE"
CHECKPOINT_PREFIX = "checkpoint-"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.json"
_TMP_PREFIX = ".tmp-"
_RUNTIME_ONLY_KEYS = ("gradient_checkpointing", "distributed", "num_processes")
"""Train settings that change how, not what, is computed; excluded from the resume fingerprint."""


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class _Runtime:
    """Device and process placement: the one place a multi-process launch has to change."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @classmethod
    def detect(cls, cfg: ResRankConfig) -> _Runtime:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1:
            raise ResRankError(
                f"launched with WORLD_SIZE={world_size}, but multi-process training is not implemented yet; "
                "run the training step as a single process"
            )
        if cfg.train.distributed != "none" or cfg.train.num_processes > 1:
            log.warning(
                "train.distributed=%s / num_processes=%d requested, training in one process",
                cfg.train.distributed,
                cfg.train.num_processes,
            )
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else None
        return cls(device=device or torch.device("cpu"))

    def autocast(self, bf16: bool) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on GPU when configured; full precision otherwise (CPU bf16 is slow and lossy)."""
        if bf16 and self.on_gpu:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def barrier(self) -> None:
        """Synchronise processes (no-op in one process)."""


# --------------------------------------------------------------------------- public API


def train(
    cfg: ResRankConfig,
    train_lists: Mapping[str, Sequence[TrainingList]],
    out_dir: Path,
    init_checkpoint: Path | None = None,
) -> Path:
    """Run every stage of ``cfg.train.stages`` in order into ``out_dir/<stage>``; returns the last stage folder."""
    checkpoint = init_checkpoint
    for stage in cfg.train.stages:
        checkpoint = train_stage(cfg, stage, train_lists, Path(out_dir) / stage.name, checkpoint)
    if checkpoint is None:
        raise ResRankError("train: the config has no training stages")
    return checkpoint


def train_stage(
    cfg: ResRankConfig,
    stage: StageConfig,
    lists: Mapping[str, Sequence[TrainingList]] | Sequence[TrainingList],
    out_dir: Path,
    init_checkpoint: Path | None = None,
) -> Path:
    """Train one stage into ``out_dir`` (resuming a matching checkpoint there); returns ``out_dir``.

    ``lists`` maps dataset names to training lists (the stage uses ``stage.datasets``) or
    is the stage's lists directly. ``init_checkpoint`` (a trained stage folder or a
    ``model.safetensors`` file) initialises the model, e.g. stage 2 from stage 1.
    """
    out_dir = Path(out_dir)
    runtime = _Runtime.detect(cfg)
    pool = _stage_pool(stage, lists)
    phases = _phases(cfg, stage)
    total = sum(n for _, n in phases)
    if stage.queries_per_step < stage.grad_accum:
        raise ResRankError(
            f"stage {stage.name}: queries_per_step ({stage.queries_per_step}) must be >= grad_accum "
            f"({stage.grad_accum}); each micro-batch needs at least one query"
        )
    fingerprint = stage_fingerprint(cfg, stage, pool, init_checkpoint)
    if _completed(out_dir, fingerprint):
        log.info("stage %s already trained in %s", stage.name, out_dir)
        return out_dir
    stage_seed = _stage_seed(cfg.seed, stage.name)
    _seed_everything(stage_seed)
    model = build_model(cfg, init_checkpoint).to(runtime.device)  # bad init weights fail before out_dir is touched
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_tmp(out_dir)
        (out_dir / DONE_FILE).unlink(missing_ok=True)  # a stale marker of another config
    if cfg.train.gradient_checkpointing and runtime.on_gpu:
        _enable_gradient_checkpointing(model)

    resume = _latest_checkpoint(out_dir, fingerprint)
    start_step, elapsed_before = 0, 0.0
    if resume is not None:
        ckpt_dir, ckpt_state = resume
        _load_weights(model, ckpt_dir / WEIGHTS_FILE)
        start_step, elapsed_before = int(ckpt_state["step"]), float(ckpt_state.get("elapsed", 0.0))
        log.info("stage %s: resuming from %s (step %d of %d)", stage.name, ckpt_dir, start_step, total)
    elif any(out_dir.glob(f"{CHECKPOINT_PREFIX}*")):
        log.warning("stage %s: checkpoints in %s belong to another config; starting afresh", stage.name, out_dir)

    base_state = {
        "stage": stage.name,
        "fingerprint": fingerprint,
        "config_fingerprint": cfg.fingerprint(),
        "variant": cfg.variant,
        "total_steps": total,
        "phases": [list(p) for p in phases],
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
    }
    logger = _LossLog(out_dir / LOG_FILE, keep_until=start_step, enabled=runtime.is_main)
    started = time.monotonic() - elapsed_before
    phase_name: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    params: list[nn.Parameter] = []
    try:
        with _progress(total, start_step, stage.name, runtime) as bar:
            for step in range(start_step + 1, total + 1):
                phase, phase_steps = _phase_at(phases, step)
                if phase != phase_name:
                    params = _configure_phase(model, cfg, phase)
                    optimizer, scheduler = _make_optimizer(model, params, stage, phase_steps)
                    if resume is not None and step == start_step + 1 and resume[1].get("phase") == phase:
                        _load_optimizer_state(resume[0], optimizer, scheduler)
                    phase_name = phase
                if resume is not None and step == start_step + 1:
                    _set_rng_state(_load_pickle(resume[0] / "rng_state.pt")["rng"])
                assert optimizer is not None and scheduler is not None
                batch = [pool[i] for i in _sample_indices(len(pool), stage.queries_per_step, stage_seed, step)]
                record = _optimizer_step(model, batch, cfg, stage, phase, step, runtime, optimizer, scheduler, params)
                record["elapsed"] = round(time.monotonic() - started, 3)
                logger.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if step % stage.checkpoint_every == 0 and step < total and runtime.is_main:
                    state = {**base_state, "step": step, "phase": phase, "elapsed": record["elapsed"]}
                    _save_checkpoint(out_dir, step, model, optimizer, scheduler, state)
                runtime.barrier()
    finally:
        logger.close()
    if runtime.is_main:
        state = {**base_state, "step": total, "phase": phase_name, "elapsed": round(time.monotonic() - started, 3)}
        _save_final(out_dir, model, {**state, "done": True}, cfg)
    runtime.barrier()
    return out_dir


def build_model(cfg: ResRankConfig, checkpoint: Path | None = None) -> nn.Module:
    """``ResRankModel`` from the config, with weights from a checkpoint folder/file when given."""
    from resrank.model.resrank import ResRankModel

    model = ResRankModel.from_config(cfg.encoder, cfg.reranker)
    if checkpoint is not None:
        _load_weights(model, _weights_path(checkpoint))
    return model


def stage_fingerprint(
    cfg: ResRankConfig, stage: StageConfig, pool: Sequence[TrainingList], init_checkpoint: Path | None
) -> str:
    """Everything that determines a stage's result: a checkpoint resumes only when this matches."""
    train = {k: v for k, v in asdict(cfg.train).items() if k != "stages" and k not in _RUNTIME_ONLY_KEYS}
    lists = hashlib.sha256()
    for tl in pool:
        lists.update(
            json.dumps(
                [tl.query.qid, [p.docid for p in tl.passages], tl.labels, tl.positives, tl.hard_negatives]
            ).encode()
        )
    init = None
    if init_checkpoint is not None:
        state_file = _checkpoint_dir(init_checkpoint) / STATE_FILE
        init = read_json(state_file).get("fingerprint") if state_file.is_file() else str(init_checkpoint)
    payload = {
        "seed": cfg.seed,
        "encoder": asdict(cfg.encoder),
        "reranker": asdict(cfg.reranker),
        "train": train,
        "stage": asdict(stage),
        "lists": lists.hexdigest(),
        "init": init,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- one step


def _optimizer_step(
    model: nn.Module,
    batch: list[TrainingList],
    cfg: ResRankConfig,
    stage: StageConfig,
    phase: str,
    step: int,
    runtime: _Runtime,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    params: list[nn.Parameter],
) -> dict[str, Any]:
    """Accumulate ``grad_accum`` micro-batches, clip, step; return the log record."""
    do_rank = phase in ("joint", "reranker")
    do_retrieval, retrieval_weight = _retrieval_term(cfg, phase)
    micro = [list(c) for c in np.array_split(np.arange(len(batch)), stage.grad_accum) if len(c)]
    chunks = [[batch[i] for i in idx] for idx in micro]
    if cfg.train.rank_loss == "ranknet":
        units = [_count_pairs(chunk) for chunk in chunks]
    else:
        units = [len(chunk) for chunk in chunks]
    total_units = sum(units)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    rank_total = torch.zeros((), device=runtime.device)
    retrieval_total = torch.zeros((), device=runtime.device)
    for chunk, unit in zip(chunks, units, strict=True):
        with runtime.autocast(cfg.train.bf16):
            rank, retrieval = _micro_losses(model, chunk, cfg, phase, do_rank, do_retrieval)
        loss = torch.zeros((), device=runtime.device)
        if rank is not None:
            w = unit / total_units if total_units else 0.0
            loss = loss + w * rank
            rank_total += w * rank.detach()
        if retrieval is not None:
            w = len(chunk) / len(batch)
            loss = loss + retrieval_weight * w * retrieval
            retrieval_total += w * retrieval.detach()
        if not torch.isfinite(loss.detach()):
            raise ResRankError(
                f"non-finite loss at {stage.name} step {step}: rank_loss={_num(rank)}, "
                f"retrieval_loss={_num(retrieval)} (lr {lr:.3g}); "
                "lower the learning rate / check inputs (empty texts, lists without labels)"
            )
        if loss.requires_grad:
            loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm) if params else torch.zeros(())
    if not torch.isfinite(grad_norm):
        raise ResRankError(
            f"non-finite gradient norm at {stage.name} step {step} (lr {lr:.3g}); "
            "lower the learning rate / check inputs"
        )
    optimizer.step()
    scheduler.step()
    rank_value = float(rank_total) if do_rank else None
    retrieval_value = float(retrieval_total) if do_retrieval else None
    return {
        "step": step,
        "stage": stage.name,
        "phase": phase,
        "loss": (rank_value or 0.0) + retrieval_weight * (retrieval_value or 0.0),
        "rank_loss": rank_value,
        "retrieval_loss": retrieval_value,
        "lr": lr,
        "grad_norm": float(grad_norm),
    }


def _retrieval_term(cfg: ResRankConfig, phase: str) -> tuple[bool, float]:
    """(compute the retrieval loss?, its weight) for a phase."""
    if phase == "encoder":
        return True, 1.0
    if phase == "joint" and cfg.train.train_encoder and cfg.train.lambda_retrieval > 0:
        return True, cfg.train.lambda_retrieval
    return False, 0.0


def _micro_losses(
    model: nn.Module,
    chunk: list[TrainingList],
    cfg: ResRankConfig,
    phase: str,
    do_rank: bool,
    do_retrieval: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Ranking and retrieval losses of one micro-batch, sharing one passage embedding pass."""
    encoder = model.encoder
    encoder_grad = phase == "encoder" or (phase == "joint" and cfg.train.train_encoder)
    queries = [tl.query.text for tl in chunk]
    rank = retrieval = None
    embeddings: list[Tensor] | None = None
    if do_rank:
        texts = [text for tl in chunk for text in tl.texts]
        with contextlib.nullcontext() if encoder_grad else torch.no_grad():
            flat = encoder(texts, "passage")
        embeddings = list(flat.split([len(tl.passages) for tl in chunk]))
        if cfg.train.rank_loss == "listmle":
            orders = [order_from_labels(tl.labels) for tl in chunk]
            logits = model.teacher_forced_logits(queries, embeddings, orders)
            rank = listmle([x.float() for x in logits], orders, tau=cfg.train.tau_rank)
        else:
            out = model(queries, embeddings)
            labels = _pad([tl.labels for tl in chunk], out.scores.shape[1], out.scores.device)
            rank = ranknet(out.scores.float(), labels, out.mask, tau=cfg.train.tau_rank)
    if do_retrieval:
        rows = [_retrieval_rows(tl) for tl in chunk]
        if embeddings is None:
            texts = [tl.passages[i].contents for tl, idx in zip(chunk, rows, strict=True) for i in idx]
            flat = encoder(texts, "passage")
            embeddings = list(flat.split([len(idx) for idx in rows]))
            rows = [list(range(len(idx))) for idx in rows]
            picked = embeddings
        else:
            picked = [emb[idx] for emb, idx in zip(embeddings, rows, strict=True)]
        query_vecs = encoder(queries, "query")
        pos = torch.stack([p[0] for p in picked])
        k = max(len(p) - 1 for p in picked)
        neg = neg_mask = exclude = None
        if k > 0:
            neg = pos.new_zeros(len(chunk), k, pos.shape[-1])
            neg_mask = torch.zeros(len(chunk), k, dtype=torch.bool, device=pos.device)
            for b, p in enumerate(picked):
                neg[b, : len(p) - 1] = p[1:]
                neg_mask[b, : len(p) - 1] = True
        exclude = _false_negatives(chunk, k, pos.device)
        retrieval = info_nce(
            query_vecs.float(),
            pos.float(),
            None if neg is None else neg.float(),
            cfg.train.tau_retrieval,
            neg_mask,
            exclude,
        )
    return rank, retrieval


def _retrieval_rows(tl: TrainingList) -> list[int]:
    """Passage indices for InfoNCE: the best-labelled positive, then the hard negatives."""
    if not tl.positives:
        raise ResRankError(f"training list {tl.query.qid!r} has no positive passage; rebuild the lists")
    best = max(tl.positives, key=lambda i: (tl.labels[i], -i))
    return [best, *[i for i in tl.hard_negatives if i != best]]


def _false_negatives(chunk: list[TrainingList], k: int, device: torch.device) -> Tensor:
    """[B, B + B*k]: True where a column's passage is relevant to the row's query (not a negative)."""
    columns: list[str | None] = []
    rows = [_retrieval_rows(tl) for tl in chunk]
    columns.extend(tl.passages[r[0]].docid for tl, r in zip(chunk, rows, strict=True))
    for tl, r in zip(chunk, rows, strict=True):
        negs = [tl.passages[i].docid for i in r[1:]]
        columns.extend(negs + [None] * (k - len(negs)))
    relevant = [{tl.passages[i].docid for i in tl.positives} for tl in chunk]
    mask = [[c is not None and c in rel for c in columns] for rel in relevant]
    return torch.tensor(mask, dtype=torch.bool, device=device)


def _count_pairs(chunk: list[TrainingList]) -> int:
    n = max(len(tl.labels) for tl in chunk)
    labels = _pad([tl.labels for tl in chunk], n, torch.device("cpu"))
    mask = _pad([[1.0] * len(tl.labels) for tl in chunk], n, torch.device("cpu")).bool()
    return ranknet_pair_count(labels, mask)


def _pad(rows: list[list[float]], width: int, device: torch.device) -> Tensor:
    out = torch.zeros(len(rows), width, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=out.dtype)
    return out


def _num(x: Tensor | None) -> float | None:
    return None if x is None else float(x.detach())


# --------------------------------------------------------------------------- setup helpers


def _phases(cfg: ResRankConfig, stage: StageConfig) -> list[tuple[str, int]]:
    if cfg.train.mode == "joint":
        return [("joint", stage.steps)]
    phases = [("reranker", stage.steps)]
    if cfg.train.train_encoder:
        phases.insert(0, ("encoder", stage.steps))
    return phases


def _phase_at(phases: list[tuple[str, int]], step: int) -> tuple[str, int]:
    """Phase containing global step ``step`` (1-based) and that phase's length."""
    end = 0
    for name, n in phases:
        end += n
        if step <= end:
            return name, n
    raise AssertionError(f"step {step} beyond {end}")


def _configure_phase(model: nn.Module, cfg: ResRankConfig, phase: str) -> list[nn.Parameter]:
    """Set requires_grad / train-eval modes for a phase; return the parameters to optimise."""
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    train_encoder = phase == "encoder" or (phase == "joint" and cfg.train.train_encoder)
    train_rest = phase in ("joint", "reranker")
    model.train()
    if not train_encoder:
        model.encoder.eval()
    params = []
    for p in model.parameters():
        wanted = train_encoder if id(p) in encoder_ids else train_rest
        p.requires_grad_(wanted)
        if wanted:
            params.append(p)
    return params


def _make_optimizer(
    model: nn.Module, params: list[nn.Parameter], stage: StageConfig, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and norm weights, i.e. 1-D tensors) with linear warm-up and decay."""
    wanted = {id(p) for p in params}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if id(p) not in wanted:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    groups = [
        g
        for g in ({"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]
    if not groups:
        groups = [{"params": [torch.zeros((), requires_grad=True)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=stage.lr)
    warmup = math.ceil(stage.warmup_ratio * steps)

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return max(0.0, (steps - i) / max(1, steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _stage_pool(
    stage: StageConfig, lists: Mapping[str, Sequence[TrainingList]] | Sequence[TrainingList]
) -> list[TrainingList]:
    if isinstance(lists, Mapping):
        missing = [d for d in stage.datasets if d not in lists]
        if missing:
            raise ResRankError(
                f"stage {stage.name}: no training lists for dataset(s) {', '.join(missing)} "
                f"(have: {', '.join(sorted(lists)) or 'none'})"
            )
        raw = [tl for d in stage.datasets for tl in lists[d]]
    else:
        raw = list(lists)
    pool = [_fit_list(tl, stage.list_size, stage.hard_negatives) for tl in raw]
    pool = [tl for tl in pool if tl.passages]
    if not pool:
        raise ResRankError(f"stage {stage.name}: no training lists (datasets: {', '.join(stage.datasets)})")
    return pool


def _fit_list(tl: TrainingList, list_size: int, hard_negatives: int) -> TrainingList:
    """Cut a list to ``list_size`` keeping its positives, and its hard negatives to the stage's count."""
    if len(tl.passages) <= list_size:
        return replace(tl, hard_negatives=tl.hard_negatives[:hard_negatives])
    positives = set(tl.positives)
    keep = sorted(positives)[:list_size]
    for i in range(len(tl.passages)):
        if len(keep) >= list_size:
            break
        if i not in positives:
            keep.append(i)
    keep.sort()
    new = {old: j for j, old in enumerate(keep)}
    return TrainingList(
        query=tl.query,
        passages=[tl.passages[i] for i in keep],
        labels=[tl.labels[i] for i in keep],
        positives=[new[i] for i in tl.positives if i in new],
        hard_negatives=[new[i] for i in tl.hard_negatives if i in new][:hard_negatives],
    )


def _stage_seed(seed: int, stage_name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(stage_name.encode())) % (2**31)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.random.default_rng([seed, epoch]).permutation(n))


def _sample_indices(n: int, per_step: int, seed: int, step: int) -> list[int]:
    """List indices of global step ``step``: a pure function of (seed, step), so resume is exact."""
    start = (step - 1) * per_step
    out = []
    for i in range(start, start + per_step):
        epoch, pos = divmod(i, n)
        out.append(_epoch_permutation(n, seed, epoch)[pos])
    return out


def _enable_gradient_checkpointing(model: nn.Module) -> None:
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@contextlib.contextmanager
def _progress(total: int, initial: int, stage: str, runtime: _Runtime) -> Iterator[Any]:
    from tqdm.auto import tqdm

    disable = not runtime.is_main or os.environ.get(NO_PROGRESS_ENV) == "1" or not sys.stderr.isatty()
    bar = tqdm(total=total, initial=initial, desc=f"train {stage}", disable=disable, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class _LossLog:
    """Append-only JSONL loss log, flushed per step; on resume, drops records past the checkpoint."""

    def __init__(self, path: Path, keep_until: int, enabled: bool) -> None:
        self.handle: IO[str] | None = None
        if not enabled:
            return
        kept = []
        if keep_until > 0 and path.is_file():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(json.JSONDecodeError):
                        if line.strip() and json.loads(line).get("step", 0) <= keep_until:
                            kept.append(line if line.endswith("\n") else line + "\n")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_dir(path: Path) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def _weights_path(checkpoint: Path) -> Path:
    path = Path(checkpoint)
    if path.is_dir() and (path / STATE_FILE).is_file() and not (path / DONE_FILE).is_file():
        raise ResRankError(f"{path}: this stage has not finished training (no {DONE_FILE}); train it first")
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise ResRankError(f"{weights}: checkpoint weights not found; train the previous stage first")
    return weights


def _load_weights(model: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as err:
        raise ResRankError(
            f"{path}: not a readable safetensors checkpoint ({err}); the file is truncated or corrupt: "
            "re-run the stage that wrote it or copy the checkpoint again"
        ) from None
    model.load_checked_state_dict(state, source=str(path))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(
    out_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    state: dict[str, Any],
) -> Path:
    """Write ``checkpoint-<step>/`` via a temporary folder and rename; delete older checkpoints."""
    target = out_dir / f"{CHECKPOINT_PREFIX}{step:07d}"

    def fill(tmp: Path) -> None:
        _save_weights(model, tmp / WEIGHTS_FILE)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"scheduler": scheduler.state_dict(), "rng": _rng_state()}, tmp / "rng_state.pt")
        write_json(tmp / STATE_FILE, state)

    _atomic_dir(target, fill)
    for old in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def _save_final(out_dir: Path, model: nn.Module, state: dict[str, Any], cfg: ResRankConfig) -> None:
    """Weights, resolved config and state (each atomically), then ``DONE``; then drop the step checkpoints."""
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{WEIGHTS_FILE}.", dir=out_dir)
    os.close(fd)
    try:
        _save_weights(model, Path(tmp))
        os.replace(tmp, out_dir / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json(out_dir / "config.json", cfg.to_dict())
    write_json(out_dir / STATE_FILE, state)
    write_json(out_dir / DONE_FILE, state)
    for old in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True)


def _save_weights(model: nn.Module, path: Path) -> None:
    """The model's own writer, so ``ResRankModel.from_checkpoint`` reads every key back."""
    model.save_checkpoint(path)


def _atomic_dir(target: Path, fill: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_tmp(out_dir: Path) -> None:
    """Leftovers of a job killed while writing a checkpoint."""
    for tmp in out_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = read_json(folder / STATE_FILE)
    except ResRankError:
        return None
    return state if isinstance(state, dict) else None


def _completed(out_dir: Path, fingerprint: str) -> bool:
    """``DONE`` of this exact training setup (its JSON carries the fingerprint) and the weights exist."""
    if not (out_dir / DONE_FILE).is_file():
        return False
    try:
        state = read_json(out_dir / DONE_FILE)
    except ResRankError:
        return False
    return bool(
        isinstance(state, dict) and state.get("fingerprint") == fingerprint and (out_dir / WEIGHTS_FILE).is_file()
    )


def _latest_checkpoint(out_dir: Path, fingerprint: str) -> tuple[Path, dict[str, Any]] | None:
    """Newest complete checkpoint of this exact training setup, if any."""
    found = []
    for folder in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        state = _read_state(folder)
        if state and state.get("fingerprint") == fingerprint and (folder / WEIGHTS_FILE).is_file():
            found.append((int(state["step"]), folder, state))
    if not found:
        return None
    _, folder, state = max(found, key=lambda f: f[0])
    return folder, state


def _load_optimizer_state(
    folder: Path, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR
) -> None:
    optimizer.load_state_dict(_load_pickle(folder / "optimizer.pt"))
    scheduler.load_state_dict(_load_pickle(folder / "rng_state.pt")["scheduler"])


def _load_pickle(path: Path) -> Any:
    """Our own checkpoint files (numpy/python RNG states need full unpickling)."""
    return torch.load(path, map_location="cpu", weights_only=False)
