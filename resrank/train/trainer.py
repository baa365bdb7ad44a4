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
  retrieval term entirely (logged as null). ``train_encoder: false`` (for all stages, or
  one stage's ``train_encoder``) freezes the encoder (no grad, eval mode) and then also
  skips the retrieval term, which could only move it; each passage is then embedded once
  per phase (``FrozenEmbeddings``).
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
* **one optimizer step** = ``queries_per_step`` lists split into ``grad_accum x
  world_size`` contiguous micro-batches (``numpy.array_split``). Each micro-batch loss is
  weighted by its share of the whole step's units (valid RankNet pairs, lists for
  ListMLE, queries for InfoNCE), so the accumulated gradient equals the full-batch
  gradient of the ranking loss. InfoNCE's in-batch negatives are those of the
  micro-batch (as in every accumulation without GradCache). Dropout in a micro-batch's
  forward is seeded from (stage seed, step, micro-batch index).
* **sampling**: step ``s`` takes list positions ``(s-1)*Q .. s*Q-1`` of an endless stream
  of epochs, each epoch a permutation drawn from ``numpy.random.default_rng([seed,
  epoch])``. The sampler is a pure function of (seed, step), so its "state" in a
  checkpoint is the step; the torch/numpy/python RNG states are checkpointed as well.
* **checkpoints**: ``checkpoint-<step>/`` (``model.safetensors`` of the whole
  ``ResRankModel``, ``optimizer.pt``, ``rng_state.pt`` with scheduler and RNG states,
  ``trainer_state.json``) every ``checkpoint_every`` steps, written to a temporary folder
  and renamed; older ones are deleted. A rerun resumes from the newest checkpoint whose
  training fingerprint matches; the final weights + ``DONE`` replace the checkpoints at
  the end (the optimizer state of a 4B model is tens of GB). A rerun whose ``DONE``
  fingerprint matches returns at once.

Distributed training
--------------------
The same code runs unchanged in one process or as N ranks under ``torchrun`` /
``accelerate launch`` (``resrank train --processes N`` re-executes itself under torchrun);
process handling lives in ``_Runtime`` (device, process group, collectives, sharding).

* **equivalence**: every rank samples the same step lists and splits them into the same
  ``grad_accum * N`` micro-batches; rank ``r`` computes micro-batches ``r, r+N, ...``
  with the global loss weights, and the gradients are summed over ranks. So *N processes
  with grad_accum a train exactly like 1 process with grad_accum N*a* (same micro-batches,
  hence the same InfoNCE negatives, same dropout masks): losses, gradient norms and
  weights agree up to float summation order. ``grad_accum`` is per process, and
  ``queries_per_step >= grad_accum * N`` is required.
* **ddp** (also used for ``distributed: none`` under a launcher): every rank holds the
  whole model and optimizer; after the step's last backward, trainable gradients are
  summed in bucketed all-reduces. Not torch's ``DistributedDataParallel`` wrapper: a
  micro-batch calls the encoder and reranker several times before one backward, and
  phases freeze parts of the model, both awkward for DDP's reducer; the price is no
  overlap of communication with the backward pass.
* **fsdp**: FSDP2 ``fully_shard`` on every transformer layer plus a root unit (embeddings,
  norms, projector) around a module whose forward is one micro-batch's loss; parameters,
  gradients and AdamW states are sharded, gradients reduce-scattered (summed) after the
  step's last micro-batch. bf16 (``precision``) on GPU adds a bf16-compute / fp32-reduce policy.
* **deepspeed** is not wired in: it raises a ``ResRankError`` pointing to fsdp.
* **files**: only rank 0 writes (loss log, checkpoints, final weights, ``DONE``); FSDP
  first gathers full weights and optimizer states to rank 0 (collectives on every rank).
  Checkpoints hold the one-process formats (full ``model.safetensors``, ``optimizer.pt``
  with integer parameter ids), so any strategy and process count resumes any
  checkpoint (the continuation is exact when ``grad_accum * N`` is unchanged); rank 0
  picks the checkpoint and every rank loads it. Barriers follow each
  save, so no rank runs ahead of a checkpoint or returns before ``DONE`` exists.
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
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor, nn

from resrank import compute
from resrank.config import ResRankConfig, StageConfig
from resrank.embedding_cache import EmbeddingCache
from resrank.errors import ResRankError
from resrank.io import read_json, sha256_file, write_json
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


class _Runtime:
    """Device and process placement: everything a multi-process launch changes lives here.

    One process (no ``WORLD_SIZE`` > 1 in the environment): CPU or ``cuda:LOCAL_RANK``,
    every collective a no-op. Under ``torchrun`` / ``accelerate launch`` (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT`` set): the default process group
    (NCCL on CUDA, gloo on CPU) is initialised here unless the caller already did, each
    rank uses ``cuda:LOCAL_RANK`` (or the CPU), and ``strategy`` is ``ddp`` (replicated
    weights, gradients summed over ranks once per optimizer step) or ``fsdp`` (FSDP2
    ``fully_shard`` per transformer layer + a root over the rest). ``root`` is the FSDP
    root module after ``prepare`` (``None`` otherwise).
    """

    def __init__(
        self, device: torch.device, rank: int = 0, world_size: int = 1, strategy: str = "none", owns_group: bool = False
    ) -> None:
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.strategy = strategy
        self.owns_group = owns_group
        self.root: nn.Module | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def detect(cls, cfg: ResRankConfig) -> _Runtime:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if world_size <= 1:
            if cfg.train.distributed != "none" or cfg.train.num_processes > 1:
                log.warning(
                    "train.distributed=%s / num_processes=%d requested but this is a single process; "
                    "launch with `resrank train --processes N` or torchrun to train on several devices",
                    cfg.train.distributed,
                    cfg.train.num_processes,
                )
            device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
            return cls(device=device)
        strategy = {"none": "ddp", "ddp": "ddp", "fsdp": "fsdp"}.get(cfg.train.distributed)
        if strategy is None:  # deepspeed
            _deepspeed_unavailable()
        import torch.distributed as dist

        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise ResRankError(
                    f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                    "launch at most one process per GPU (train.num_processes / resrank train --processes)"
                )
            torch.cuda.set_device(local_rank)
            device, backend = torch.device("cuda", local_rank), "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend=backend)
        rank = dist.get_rank()
        if dist.get_world_size() != world_size:
            raise ResRankError(f"WORLD_SIZE={world_size} but the process group has {dist.get_world_size()} ranks")
        if rank == 0 and cfg.train.num_processes != world_size:
            log.info("train.num_processes=%d, launched with %d processes", cfg.train.num_processes, world_size)
        log.debug("rank %d/%d on %s (%s, %s)", rank, world_size, device, backend, strategy)
        return cls(device=device, rank=rank, world_size=world_size, strategy=strategy, owns_group=owns)

    def close(self) -> None:
        """Destroy the process group if ``detect`` created it."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    def autocast(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast where ``precision`` asks for it (see ``resrank.compute``)."""
        return compute.autocast(precision, self.device)

    def barrier(self) -> None:
        """Synchronise processes (no-op in one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled), so all ranks take the same decision."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """In-place sum over ranks (identity in one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    # ----------------------------------------------------------------- data parallelism

    def prepare(self, model: nn.Module, cfg: ResRankConfig) -> None:
        """Make all replicas start from rank 0's weights; with FSDP, shard the model (sets ``root``)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
        if self.strategy == "fsdp":
            self.root = _shard(model, cfg, self)

    def micro_losses(self, model: nn.Module, *args: Any) -> tuple[Tensor | None, Tensor | None]:
        """``_micro_losses`` of one micro-batch, through the FSDP root when sharded."""
        if self.root is not None:
            return self.root(*args)
        return _micro_losses(model, *args)

    def gradient_sync(self, enabled: bool) -> None:
        """FSDP: reduce-scatter gradients only after the last micro-batch of a step."""
        if self.root is not None:
            self.root.set_requires_gradient_sync(enabled)  # type: ignore[operator]

    def reduce_gradients(self, params: list[nn.Parameter]) -> None:
        """DDP: sum every trainable parameter's gradient over ranks (FSDP reduces in backward).

        A gradient that is ``None`` on every rank stays ``None`` (AdamW then skips that
        parameter, as in one process); one that exists on some rank only is zero elsewhere.
        """
        if not self.distributed or self.strategy != "ddp" or not params:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        grads = []
        for p, has in zip(params, present.tolist(), strict=True):
            if has:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        for bucket in _buckets(grads, _BUCKET_ELEMENTS):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for grad, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                grad.copy_(reduced)

    def full_state_dict(self, model: nn.Module) -> dict[str, Tensor] | None:
        """The whole model's state dict on rank 0 (gathered from the shards with FSDP), ``None`` elsewhere.

        A collective under FSDP: every rank must call it.
        """
        if self.root is None:
            return model.state_dict() if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        return {k.removeprefix(_ROOT_PREFIX): v for k, v in state.items()}

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """``optimizer.state_dict()`` of one process (integer parameter ids) on rank 0, ``None`` elsewhere.

        FSDP gathers the sharded states into that same format, so a checkpoint resumes with
        any strategy and process count. A collective under FSDP: every rank must call it.
        """
        if self.root is None or not _optimizes_model(optimizer, self.root):
            return optimizer.state_dict() if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(
            self.root, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not self.is_main:
            return None
        index = {name: i for i, name in enumerate(_optimizer_param_names(optimizer, self.root))}
        return {
            "state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
        }

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load what ``optimizer_state`` wrote (every rank reads the same file)."""
        if self.root is None or not _optimizes_model(optimizer, self.root):
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = _optimizer_param_names(optimizer, self.root)
        by_name = {
            "state": {names[int(i)]: value for i, value in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]],
        }
        # strict=False: parameters that never received a gradient (e.g. an unused pooler) have no state
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(self.root, optimizer, by_name, options=options)


_BUCKET_ELEMENTS = 2**25
"""Gradient elements per DDP all-reduce (128 MB of fp32): bounds the extra flat buffer."""
_ROOT_PREFIX = "model."


def _buckets(tensors: list[Tensor], limit: int) -> Iterator[list[Tensor]]:
    """Consecutive groups of same-dtype tensors of at most ``limit`` elements (one tensor may exceed it)."""
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.numel() > limit or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


class _LossModule(nn.Module):
    """FSDP root: one forward = one micro-batch's losses, so every sharded parameter is gathered by a hook."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> tuple[Tensor | None, Tensor | None]:
        return _micro_losses(self.model, *args)


def _shard(model: nn.Module, cfg: ResRankConfig, runtime: _Runtime) -> nn.Module:
    """FSDP2 full sharding: one unit per transformer layer (the backbones' ``_no_split_modules``), one root.

    The root unit holds the rest (token embeddings, final norms, projector); it stays
    gathered during a micro-batch, which lets the model use the embedding table directly.

    Gradients are summed, not averaged, over ranks (the loss weights are global already).
    bf16 on GPU: bf16 compute copies of the parameters, fp32 shards and fp32 gradient reduction.
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    from transformers import PreTrainedModel

    policy = MixedPrecisionPolicy()
    if runtime.on_gpu and compute.uses_bf16(cfg.precision, runtime.device):
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layer_classes: set[str] = set()
    embeddings: set[int] = set()  # the reranker reads its token embeddings outside the backbone's forward
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            layer_classes.update(module._no_split_modules or [])
            embeddings.add(id(module.get_input_embeddings()))
    units = [
        m
        for m in model.modules()
        if type(m).__name__ in layer_classes and not any(id(sub) in embeddings for sub in m.modules())
    ]
    unit_names = ", ".join(sorted({type(m).__name__ for m in units}))
    for module in units:
        fully_shard(module, mp_policy=policy)
    root = fully_shard(_LossModule(model), mp_policy=policy)
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM
    log.info(
        "FSDP: %d sharded units (%s) + root on %d ranks",
        len(units),
        unit_names,
        runtime.world_size,
    )
    return root


def _optimizes_model(optimizer: torch.optim.Optimizer, module: nn.Module) -> bool:
    """False for the placeholder optimizer of a phase without trainable parameters."""
    ids = {id(p) for p in module.parameters()}
    return all(id(p) in ids for g in optimizer.param_groups for p in g["params"])


def _optimizer_param_names(optimizer: torch.optim.Optimizer, module: nn.Module) -> list[str]:
    """Parameter names in ``optimizer.state_dict()`` id order (the names torch.distributed.checkpoint uses)."""
    names = {id(p): name for name, p in module.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _deepspeed_unavailable() -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise ResRankError(
            "train.distributed 'deepspeed' needs the deepspeed package: pip install deepspeed; or use fsdp"
        ) from None
    raise ResRankError(
        "train.distributed 'deepspeed' (ZeRO-3) is not wired into this trainer (untested); "
        "use fsdp, which shards parameters, gradients and optimizer states the same way"
    )


@contextlib.contextmanager
def _session(cfg: ResRankConfig) -> Iterator[_Runtime]:
    """The runtime for a stage or a chain of stages; tears the process group down after success."""
    runtime = _Runtime.detect(cfg)
    yield runtime
    runtime.close()


# --------------------------------------------------------------------------- public API


def train(
    cfg: ResRankConfig,
    train_lists: Mapping[str, Sequence[TrainingList]],
    out_dir: Path,
    init_checkpoint: Path | None = None,
) -> Path:
    """Run every stage of ``cfg.train.stages`` in order into ``out_dir/<stage>``; returns the last stage folder."""
    checkpoint = init_checkpoint
    with _session(cfg):  # one process group for all stages
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
    embedding_cache: Path | None = None,
) -> Path:
    """Train one stage into ``out_dir`` (resuming a matching checkpoint there); returns ``out_dir``.

    ``lists`` maps dataset names to training lists (the stage uses ``stage.datasets``) or
    is the stage's lists directly. ``init_checkpoint`` (a trained stage folder or a
    ``model.safetensors`` file) initialises the model, e.g. stage 2 from stage 1.
    ``embedding_cache`` (a folder) lets stages that freeze their initial encoder share
    its training-passage embeddings on disk (see ``FrozenEmbeddings``).
    Under torchrun every rank calls this with the same arguments.
    """
    with _session(cfg) as runtime:
        return _train_stage(runtime, cfg, stage, lists, Path(out_dir), init_checkpoint, embedding_cache)


def _train_stage(
    runtime: _Runtime,
    cfg: ResRankConfig,
    stage: StageConfig,
    lists: Mapping[str, Sequence[TrainingList]] | Sequence[TrainingList],
    out_dir: Path,
    init_checkpoint: Path | None,
    embedding_cache: Path | None = None,
) -> Path:
    pool = _stage_pool(stage, lists)
    if stage.train_encoder is not None:  # a per-stage override of train.train_encoder
        cfg = replace(cfg, train=replace(cfg.train, train_encoder=stage.train_encoder))
    phases = _phases(cfg, stage)
    total = sum(n for _, n in phases)
    micro_batches = stage.grad_accum * runtime.world_size
    if stage.queries_per_step < micro_batches:
        per = f"grad_accum ({stage.grad_accum})" + (
            f" x processes ({runtime.world_size})" if runtime.distributed else ""
        )
        raise ResRankError(
            f"stage {stage.name}: queries_per_step ({stage.queries_per_step}) must be >= {per}; "
            "each micro-batch needs at least one query"
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
    runtime.barrier()
    if cfg.train.gradient_checkpointing and runtime.on_gpu:
        _enable_gradient_checkpointing(model)

    found = _latest_checkpoint(out_dir, fingerprint) if runtime.is_main else None
    ckpt_path = runtime.broadcast_object(None if found is None else str(found[0]))  # rank 0 decides for all
    resume = None if ckpt_path is None else (Path(ckpt_path), _read_state(Path(ckpt_path)) or {})
    start_step, elapsed_before = 0, 0.0
    if resume is not None:
        ckpt_dir, ckpt_state = resume
        _load_weights(model, ckpt_dir / WEIGHTS_FILE)
        start_step, elapsed_before = int(ckpt_state["step"]), float(ckpt_state.get("elapsed", 0.0))
        log.info("stage %s: resuming from %s (step %d of %d)", stage.name, ckpt_dir, start_step, total)
    elif runtime.is_main and any(out_dir.glob(f"{CHECKPOINT_PREFIX}*")):
        log.warning("stage %s: checkpoints in %s belong to another config; starting afresh", stage.name, out_dir)
    runtime.prepare(model, cfg)

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
    frozen: FrozenEmbeddings | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    params: list[nn.Parameter] = []
    try:
        with _progress(total, start_step, stage.name, runtime) as bar:
            for step in range(start_step + 1, total + 1):
                phase, phase_steps = _phase_at(phases, step)
                if phase != phase_name:
                    params = _configure_phase(model, cfg, phase)
                    frozen = None
                    if not _encoder_trains(cfg, phase):
                        # an encoder phase earlier in this stage changed the weights: no shared store
                        initial = phases[0][0] == phase and runtime.strategy != "fsdp"
                        store = _frozen_store(cfg, init_checkpoint, pool, embedding_cache) if initial else None
                        with runtime.autocast(cfg.precision):
                            frozen = FrozenEmbeddings(model.encoder, store, [t for tl in pool for t in tl.texts])
                    optimizer, scheduler = _make_optimizer(model, params, stage, phase_steps)
                    if resume is not None and step == start_step + 1 and resume[1].get("phase") == phase:
                        _load_optimizer_state(resume[0], optimizer, scheduler, runtime)
                    phase_name = phase
                if resume is not None and step == start_step + 1:
                    _set_rng_state(_load_pickle(resume[0] / "rng_state.pt")["rng"])
                assert optimizer is not None and scheduler is not None
                batch = [pool[i] for i in _sample_indices(len(pool), stage.queries_per_step, stage_seed, step)]
                record = _optimizer_step(model, batch, cfg, stage, phase, step, runtime, optimizer, scheduler, params,
                                         frozen)
                record["elapsed"] = round(time.monotonic() - started, 3)
                logger.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if step % stage.checkpoint_every == 0 and step < total:
                    state = {**base_state, "step": step, "phase": phase, "elapsed": record["elapsed"]}
                    _save_checkpoint(out_dir, step, model, optimizer, scheduler, state, runtime)
    finally:
        logger.close()
    state = {**base_state, "step": total, "phase": phase_name, "elapsed": round(time.monotonic() - started, 3)}
    _save_final(out_dir, model, {**state, "done": True}, cfg, runtime)
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
    frozen: FrozenEmbeddings | None = None,
) -> dict[str, Any]:
    """Accumulate this rank's micro-batches, reduce gradients over ranks, clip, step; return the log record.

    The step's ``queries_per_step`` lists are split into ``grad_accum * world_size``
    contiguous micro-batches (exactly one process's split with that ``grad_accum``); rank
    ``r`` runs micro-batches ``r, r + world_size, ...``. Loss weights are shares of the
    whole step's units, so the summed gradient is the same on any process count.
    """
    do_rank = phase in ("joint", "reranker")
    do_retrieval, retrieval_weight = _retrieval_term(cfg, phase)
    n_micro = stage.grad_accum * runtime.world_size
    micro = [list(c) for c in np.array_split(np.arange(len(batch)), n_micro) if len(c)]
    chunks = [[batch[i] for i in idx] for idx in micro]
    if cfg.train.rank_loss == "ranknet":
        units = [_count_pairs(chunk) for chunk in chunks]
    else:
        units = [len(chunk) for chunk in chunks]
    total_units = sum(units)  # every rank sees the whole step's lists: no communication needed
    mine = list(range(runtime.rank, len(chunks), runtime.world_size))
    stage_seed = _stage_seed(cfg.seed, stage.name)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    totals = torch.zeros(2, device=runtime.device)  # weighted rank and retrieval losses of this rank
    for position, index in enumerate(mine):
        chunk, unit = chunks[index], units[index]
        runtime.gradient_sync(position == len(mine) - 1)
        with runtime.autocast(cfg.precision), _micro_batch_rng(stage_seed, step, index, runtime.device):
            rank, retrieval = runtime.micro_losses(model, chunk, cfg, phase, do_rank, do_retrieval, frozen)
        loss = torch.zeros((), device=runtime.device)
        if rank is not None:
            w = unit / total_units if total_units else 0.0
            loss = loss + w * rank
            totals[0] += w * rank.detach().float()
        if retrieval is not None:
            w = len(chunk) / len(batch)
            loss = loss + retrieval_weight * w * retrieval
            totals[1] += w * retrieval.detach().float()
        if not torch.isfinite(loss.detach()):
            raise ResRankError(
                f"non-finite loss at {stage.name} step {step}: rank_loss={_num(rank)}, "
                f"retrieval_loss={_num(retrieval)} (lr {lr:.3g}); "
                "lower the learning rate / check inputs (empty texts, lists without labels)"
            )
        if loss.requires_grad:
            loss.backward()
    runtime.reduce_gradients(params)
    rank_total, retrieval_total = runtime.all_reduce_sum(totals).unbind()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm) if params else torch.zeros(())
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a replicated DTensor
        grad_norm = grad_norm.full_tensor()
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
    frozen: FrozenEmbeddings | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """Ranking and retrieval losses of one micro-batch, sharing one passage embedding pass."""
    encoder = model.encoder
    encoder_grad = _encoder_trains(cfg, phase)
    queries = [tl.query.text for tl in chunk]
    rank = retrieval = None
    embeddings: list[Tensor] | None = None
    if do_rank:
        texts = [text for tl in chunk for text in tl.texts]
        if encoder_grad:
            flat = encoder(texts, "passage")
        elif frozen is not None:
            flat = frozen(texts)
        else:
            with torch.no_grad():
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


def _encoder_trains(cfg: ResRankConfig, phase: str) -> bool:
    return phase == "encoder" or (phase == "joint" and cfg.train.train_encoder)


class FrozenEmbeddings:
    """Passage embeddings of a frozen encoder, each text embedded once per phase.

    While the encoder is frozen (eval mode, no gradient) a passage's vector cannot change,
    so re-embedding it every time a list comes round again is wasted work; on a CPU it is
    most of a frozen-encoder step. Without a ``store`` texts are embedded lazily, in the
    order they are first seen (deterministic for a seed). With one (an on-disk cache keyed
    by the encoder weights and the set of ``texts``), all of ``texts`` are embedded up front
    in one canonical order, so every variant that freezes the same encoder over the same
    training pool reads identical vectors, and only the first one computes them.
    """

    def __init__(self, encoder: nn.Module, store: EmbeddingCache | None = None, texts: Sequence[str] = ()) -> None:
        self.encoder = encoder
        self.vectors: dict[str, Tensor] = {}
        if store is not None and texts:
            unique = sorted(set(texts))
            vectors = store.get_or_encode(unique, lambda batch: encoder.encode(batch, "passage"))
            self.vectors = dict(zip(unique, vectors, strict=True))

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        new = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if new:
            for text, vector in zip(new, self.encoder(new, "passage").float(), strict=True):
                self.vectors[text] = vector
        return torch.stack([self.vectors[t] for t in texts]).to(self.encoder.device)


def _frozen_store(cfg: ResRankConfig, init_checkpoint: Path | None, pool: Sequence[TrainingList],
                  root: Path | None) -> EmbeddingCache | None:
    """The shared store of the initial encoder's embeddings of this pool (None without a root)."""
    if root is None:
        return None
    weights = "untrained" if init_checkpoint is None else sha256_file(_weights_path(init_checkpoint))
    texts = hashlib.sha256("\n".join(sorted({t for tl in pool for t in tl.texts})).encode()).hexdigest()
    key = f"{weights}|{cfg.encoder}|{compute.describe(cfg.precision, compute.default_device())}|{texts}"
    return EmbeddingCache(root, hashlib.sha256(key.encode()).hexdigest()[:32])


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
    train_encoder = _encoder_trains(cfg, phase)
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
        # redrawn upsampled lists were built as extra lists (load_training_lists); only repeats are made here
        copies = {d: 1 if stage.draws_upsampled_lists else stage.upsample.get(d, 1) for d in stage.datasets}
        raw = [tl for d in stage.datasets for _ in range(copies[d]) for tl in lists[d]]
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


@contextlib.contextmanager
def _micro_batch_rng(stage_seed: int, step: int, index: int, device: torch.device) -> Iterator[None]:
    """Torch RNG (dropout) seeded from (stage seed, step, micro-batch) for one micro-batch's forward.

    Dropout masks then depend on which micro-batch is computed, not on which process or in
    what order, so N processes reproduce one process exactly; the global RNG is restored after.
    """
    seed = int(np.random.SeedSequence([stage_seed, step, index]).generate_state(1, np.uint64)[0] >> 1)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


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
    runtime: _Runtime,
) -> Path:
    """Write ``checkpoint-<step>/`` via a temporary folder and rename; delete older checkpoints.

    Every rank calls this (FSDP gathers the shards); rank 0 alone writes, the others wait.
    """
    target = out_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    weights = runtime.full_state_dict(model)
    optim_state = runtime.optimizer_state(optimizer)
    if runtime.is_main:

        def fill(tmp: Path) -> None:
            _save_weights(model, tmp / WEIGHTS_FILE, weights, runtime)
            torch.save(optim_state, tmp / "optimizer.pt")
            torch.save({"scheduler": scheduler.state_dict(), "rng": _rng_state()}, tmp / "rng_state.pt")
            write_json(tmp / STATE_FILE, state)

        _atomic_dir(target, fill)
        for old in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    runtime.barrier()
    return target


def _save_final(out_dir: Path, model: nn.Module, state: dict[str, Any], cfg: ResRankConfig, runtime: _Runtime) -> None:
    """Weights, resolved config and state (each atomically), then ``DONE``; then drop the step checkpoints.

    Every rank calls this; rank 0 alone writes, and no rank returns before ``DONE`` exists.
    """
    weights = runtime.full_state_dict(model)
    if runtime.is_main:
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{WEIGHTS_FILE}.", dir=out_dir)
        os.close(fd)
        try:
            _save_weights(model, Path(tmp), weights, runtime)
            os.replace(tmp, out_dir / WEIGHTS_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        write_json(out_dir / "config.json", cfg.to_dict())
        write_json(out_dir / STATE_FILE, state)
        write_json(out_dir / DONE_FILE, state)
        for old in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)
    runtime.barrier()


def _save_weights(model: nn.Module, path: Path, weights: dict[str, Tensor] | None, runtime: _Runtime) -> None:
    """The model's own writer, so ``ResRankModel.from_checkpoint`` reads every key back.

    With FSDP the model holds shards only, so ``weights`` (the gathered state dict) is
    written the same way: safetensors, every key stored, shared tensors cloned.
    """
    if runtime.root is None:
        model.save_checkpoint(path)
        return
    from safetensors.torch import save_file

    assert weights is not None
    seen: set[int] = set()
    out = {}
    for key, tensor in weights.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        out[key] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
        seen.add(ptr)
    save_file(out, str(path))


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
    folder: Path, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, runtime: _Runtime
) -> None:
    runtime.load_optimizer_state(optimizer, _load_pickle(folder / "optimizer.pt"))
    scheduler.load_state_dict(_load_pickle(folder / "rng_state.pt")["scheduler"])


def _load_pickle(path: Path) -> Any:
    """Our own checkpoint files (numpy/python RNG states need full unpickling)."""
    return torch.load(path, map_location="cpu", weights_only=False)
