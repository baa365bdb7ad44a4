"""Precision resolution: one decision for training and inference."""

from __future__ import annotations

import pytest
import torch

from resrank import compute

CPU = torch.device("cpu")


def test_fp32_never_autocasts_and_bf16_always_does() -> None:
    assert not compute.uses_bf16("fp32", CPU)
    assert compute.uses_bf16("bf16", CPU)
    with compute.autocast("bf16", CPU):
        out = torch.ones(2, 3) @ torch.ones(3, 2)
    assert out.dtype == torch.bfloat16
    with compute.autocast("fp32", CPU):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


def test_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert compute.describe("auto", CPU) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert compute.describe("auto", CPU) == "bf16"


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        compute.uses_bf16("fp16", CPU)
