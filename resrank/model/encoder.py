"""The encoder-LLM ``E``: text -> one L2-normalised vector.

It embeds passages for the reranker (``e_i``, one input slot each) and queries and
passages for first-stage dense retrieval. Any Hugging Face ``AutoModel`` works; the
pooling must match how the checkpoint was trained:

* ``mean``: average of the last hidden states over real tokens (sentence-transformers
  models such as all-MiniLM-L6-v2);
* ``last``: the last real token, which for decoder embedders (Qwen3-Embedding) is the
  EOS token; EOS is appended when the tokenizer does not add it itself;
* ``cls``: the first real token.

Positions are found from the attention mask, so left and right padding both work.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from resrank.config import EncoderConfig
from resrank.errors import ResRankError

Kind = Literal["query", "passage"]
Pooling = Literal["mean", "last", "cls"]
POOLINGS = ("mean", "last", "cls")


def pool(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """``[B, L, H]`` hidden states -> ``[B, H]`` (float32), ignoring padding on either side."""
    hidden = hidden.float()
    mask = attention_mask.to(hidden.device)
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "last":
        # index of the last 1 in each row: works for right padding (1..10..0) and left (0..01..1)
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).long().argmax(dim=1)
        return hidden[rows, last]
    if pooling == "cls":
        first = mask.long().argmax(dim=1)
        return hidden[rows, first]
    raise ResRankError(f"unknown pooling '{pooling}'; known: {', '.join(POOLINGS)}")


class Encoder(torch.nn.Module):
    """HF backbone + pooling + L2 normalisation, with per-kind prefixes and max lengths."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        pooling: Pooling = "mean",
        max_length: int = 256,
        query_max_length: int = 64,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ResRankError(f"encoder.pooling: unknown pooling '{pooling}'; known: {', '.join(POOLINGS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.prefixes: dict[str, str] = {"query": query_prefix, "passage": passage_prefix}
        self.batch_size = batch_size
        self._append_eos = pooling == "last" and self._tokenizer_drops_eos()
        # decoders would otherwise build a KV cache on every call (memory, and a warning under checkpointing)
        self._no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> Encoder:
        """Load ``cfg.model`` (see ``resrank.model.loading``) and wrap it."""
        from resrank.model.loading import load_backbone

        model, tokenizer = load_backbone(cfg.model)
        return cls(
            model,
            tokenizer,
            pooling=cfg.pooling,
            max_length=cfg.max_length,
            query_max_length=cfg.query_max_length,
            query_prefix=cfg.query_prefix,
            passage_prefix=cfg.passage_prefix,
            batch_size=cfg.batch_size,
        )

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str], kind: Kind) -> list[list[int]]:
        """Prefixed, truncated token ids per text (unpadded), EOS-terminated for ``last`` pooling."""
        if kind not in self.prefixes:
            raise ResRankError(f"encoder: kind must be 'query' or 'passage', got '{kind}'")
        limit = self.query_max_length if kind == "query" else self.max_length
        prefix = self.prefixes[kind]
        reserve = 1 if self._append_eos else 0
        ids = self.tokenizer(
            [prefix + text for text in texts], truncation=True, max_length=limit - reserve, padding=False
        )["input_ids"]
        if self._append_eos:
            eos = self.tokenizer.eos_token_id
            ids = [row if row and row[-1] == eos else [*row, eos] for row in ids]
        return [list(row) for row in ids]

    def embed_ids(self, ids: list[list[int]]) -> Tensor:
        """Token ids (one batch) -> ``[B, H]`` normalised embeddings, with gradient."""
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        device = self.device
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **self._no_cache)
        return F.normalize(pool(out.last_hidden_state, attention_mask, self.pooling), p=2, dim=-1)

    def forward(self, texts: list[str], kind: Kind) -> Tensor:
        """Texts -> ``[len(texts), H]`` L2-normalised float32 embeddings (one batch, differentiable)."""
        if not texts:
            return torch.zeros(0, self.hidden_size, device=self.device)
        return self.embed_ids(self.tokenize(texts, kind))

    @torch.no_grad()
    def encode(self, texts: list[str], kind: Kind, batch_size: int | None = None) -> Tensor:
        """Inference embeddings as float32 on CPU, in input order.

        Texts are sorted by token length so each batch pads little, and the model is in
        eval mode meanwhile (dropout off) so cached embeddings are deterministic.
        """
        if not texts:
            return torch.zeros(0, self.hidden_size)
        size = batch_size or self.batch_size
        ids = self.tokenize(texts, kind)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        out = torch.empty(len(ids), self.hidden_size)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                out[torch.tensor(chunk)] = self.embed_ids([ids[i] for i in chunk]).float().cpu()
        finally:
            self.train(was_training)
        return out

    def _tokenizer_drops_eos(self) -> bool:
        """True when the tokenizer has an EOS token but does not append it itself."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            return False
        probe = self.tokenizer(["probe"], padding=False)["input_ids"][0]
        return not probe or probe[-1] != eos
