"""Where models run and at what precision: one decision shared by training and inference.

``precision`` (config key, top level):

* ``fp32``: full precision everywhere (exact, portable; the smoke profile and tests).
* ``bf16``: bf16 autocast for matrix products on any device; weights, optimizer states,
  embeddings written to disk and scores stay float32.
* ``auto``: bf16 where the hardware computes it natively (CUDA GPUs with bf16, CPUs with
  AVX512-BF16 or AMX), fp32 elsewhere. On such a 2-core CPU a MiniLM forward pass is
  ~1.8x and a training step ~1.5x faster than in fp32.

The resolved choice is recorded with the results (``describe``) and keys the embedding
cache, so bf16 and fp32 embeddings are never mixed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


def default_device() -> torch.device:
    """The first CUDA device when there is one (one process per GPU), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 matrix products in hardware."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return native_bf16(device)
    return precision == "bf16"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``precision`` resolves to bf16, else nothing."""
    if uses_bf16(precision, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` as resolved on ``device``: what results record."""
    return "bf16" if uses_bf16(precision, device) else "fp32"
