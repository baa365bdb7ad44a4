"""Efficiency of ResRank's compressed input against full-text listwise reranking.

Every method runs on the **same reranker backbone** (a Qwen3-architecture causal LM built
from a ``Qwen3Config`` with seeded random weights: cost does not depend on the weights;
ResRank uses its transformer body, the full-text methods also its LM head) and the **same
synthetic candidate lists** (random token ids; ``passage_tokens`` per passage,
``query_tokens`` for everything in the prompt that is not a passage: instruction, labels,
query). A word-level ``SyntheticTokenizer`` lets the real ``ResRankModel`` and ``Encoder``
run on any backbone shape without the hub. Methods:

``resrank``
    The paper's one-step scoring, run by the real ``ResRankModel.forward``: input = prompt
    (instruction, query; ``q`` tokens), one slot per passage carrying the identity-projected
    encoder embedding ``e_i``, one summary/EOS token; one forward pass;
    ``s_i = cos(h_eos, h_i + e_i)``. Processed tokens ``q + n + 1``, generated 0.
``resrank-autoregressive``
    ``ResRankModel.rank_autoregressive``: the same compressed input, then PE-Rank style
    constrained decoding with a KV cache (the prefill's summary state picks the first
    passage among the residual representations, the picked passage's embedding is fed
    back, and so on). Forward passes ``n`` (1 prefill + ``n - 1`` decode steps), generated
    ``n`` (one passage per step), processed ``(q + n + 1) + (n - 1)``.
``fulltext-onestep``
    Passage *texts* in the prompt (``[id]`` marker of ``PROMPT_ID_TOKENS`` tokens + text per
    passage), one forward pass, scores = cosine of the final token's hidden state with each
    passage's last token (the full-text counterpart of ResRank's scoring). Processed
    ``q + n (3 + p) + 1``.
``fulltext-generate``
    RankGPT / rank_llm style permutation generation: sliding window ``WINDOW`` = 20, step
    ``STEP`` = 10, from the back of the list; each window's prompt holds the window's
    passage texts with local identifiers ``[1]..[m]``, and ``GEN_TOKENS_PER_ID`` = 4 tokens
    (``[``, id, ``]``, ``>``) are generated per passage greedily with a KV cache. Bracket
    and separator tokens are forced and the identifier token is the greedy choice among
    the identifiers not yet emitted, so the output is always a valid permutation; the
    full-vocabulary LM head runs at every step as in real generation. Per window of ``m``:
    forward passes ``4m`` (prefill + ``4m - 1`` steps), generated ``4m``, processed
    ``prompt + 4m - 1`` (the last generated token is never fed back).

Token accounting. ``processed_tokens`` counts every position the reranker runs a forward
pass over (prompt tokens plus generated tokens fed back), ``generated_tokens`` every token
(or passage, for the autoregressive ResRank) emitted, ``forward_passes`` every call of the
reranker. Real RankGPT prompts also carry per-passage chat turns, a post-prompt and
multi-token (digit-split) identifiers, so the full-text costs here are lower bounds.

Measurement. Per query wall time under ``torch.inference_mode`` after ``warmup`` untimed
runs of every (method, n); methods are interleaved (rotated order in each repeat) so a
noisy shared machine slows all of them alike; on CUDA the time is taken with CUDA events
around the call and a synchronize (the call ends by copying the ranking to the host, as a
real reranker must). The offline passage encoding (encoder forward over the ``n``
passages, batch ``ENCODE_BATCH``, last-token pooling, L2 norm) is timed in the same loop
but reported separately (method ``passage-encoding``), never inside ResRank's latency.

Peak memory (``peak_memory_mb``, MiB = 2**20 bytes) is the *increase* over what is
resident before the call (weights, inputs), from an untimed run per (method, n): on CUDA
the last warm-up run, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
minus ``memory_allocated`` before; on CPU a separate pass after the timing (the sampler
would perturb it), the process RSS sampled every ~0.2 ms by a
thread (``/proc/self/statm``) minus the RSS before the call, with glibc's mmap threshold
pinned to 64 KiB for that pass and ``malloc_trim(0)`` before each call, so freed memory
goes back to the OS and RSS tracks live allocations (tracemalloc does not see torch's
allocations; ``ru_maxrss`` only ever grows over the process). The CPU figure is approximate
(sampling can miss sub-0.2 ms peaks; small allocations come from the heap).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import gc
import inspect
import io
import json
import logging
import math
import os
import statistics
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from resrank.errors import ResRankError
from resrank.io import atomic_write, write_json

log = logging.getLogger(__name__)

METHODS = ("resrank", "resrank-autoregressive", "fulltext-onestep", "fulltext-generate")
ENCODING = "passage-encoding"
CSV_COLUMNS = (
    "method",
    "n_candidates",
    "median_latency_s",
    "p90_latency_s",
    "forward_passes",
    "processed_tokens",
    "generated_tokens",
    "peak_memory_mb",
)
BACKBONES = ("tiny", "small", "qwen3-0.6b", "qwen3-4b")

QUERY_TOKENS = 32
PASSAGE_TOKENS = 64
WINDOW = 20
STEP = 10
PROMPT_ID_TOKENS = 3  # "[", id, "]" before each passage text in a full-text prompt
GEN_TOKENS_PER_ID = 4  # "[", id, "]", ">" generated per passage in a window
ENCODE_BATCH = 64

# Synthetic vocabulary: a few reserved ids, then identifier tokens, then "text".
EOS_ID, LBRACKET_ID, RBRACKET_ID, SEPARATOR_ID = 1, 2, 3, 4
ID_BASE = 8  # identifier k (0-based) of a window is token ID_BASE + k
FIRST_TEXT_ID = ID_BASE + WINDOW + 4

#: Qwen3Config fields per backbone size. The Qwen3 shapes are the released models'
#: config.json values (Qwen/Qwen3-0.6B, Qwen/Qwen3-4B); ``small`` is a CPU-sized Qwen3.
_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=128, vocab_size=1024,
    ),
    "small": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        intermediate_size=768, vocab_size=32000,
    ),
    "qwen3-0.6b": dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        intermediate_size=3072, vocab_size=151936,
    ),
    "qwen3-4b": dict(
        hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        intermediate_size=9728, vocab_size=151936,
    ),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------- results
@dataclass
class Row:
    """One (method, n) cell: latency over repeats, exact per-query costs, peak memory."""

    method: str
    n_candidates: int
    median_latency_s: float
    p90_latency_s: float
    forward_passes: int
    processed_tokens: int
    generated_tokens: int
    peak_memory_mb: float
    latencies_s: list[float] = field(default_factory=list)
    backbone: str = ""
    device: str = ""
    dtype: str = ""
    query_tokens: int = QUERY_TOKENS
    passage_tokens: int = PASSAGE_TOKENS
    threads: int = 0  # torch CPU threads during the measurement

    def csv_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CSV_COLUMNS}


@dataclass
class Cost:
    """Reranker work of one query, accumulated by the method while it runs."""

    forward_passes: int = 0
    processed_tokens: int = 0
    generated_tokens: int = 0

    def forward(self, tokens: int) -> None:
        self.forward_passes += 1
        self.processed_tokens += tokens


# -------------------------------------------------------------------- backbones
def backbone_config(name: str) -> Any:
    """``Qwen3Config`` of a benchmark backbone (see ``BACKBONES``)."""
    from transformers import Qwen3Config

    if name not in _SHAPES:
        raise ResRankError(f"unknown efficiency backbone '{name}'; known: {', '.join(BACKBONES)}")
    rope: dict[str, Any] = {"rope_theta": 1_000_000.0}
    if "rope_parameters" in inspect.signature(Qwen3Config.__init__).parameters:  # transformers 5 naming
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
    return Qwen3Config(
        **_SHAPES[name],
        **rope,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        use_cache=True,
        pad_token_id=0,
        eos_token_id=EOS_ID,
        bos_token_id=EOS_ID,
    )


def build_backbone(name: str, device: str | torch.device, dtype: torch.dtype, seed: int, lm_head: bool = True) -> Any:
    """Seeded random-weight Qwen3 model (``Qwen3ForCausalLM``, or ``Qwen3Model`` for the encoder)."""
    from transformers import Qwen3ForCausalLM, Qwen3Model

    config = backbone_config(name)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = (Qwen3ForCausalLM if lm_head else Qwen3Model)(config)
    return model.to(dtype=dtype).eval()


class Backbone:
    """The reranker LM with one call shape for every method (hidden states of one sequence).

    Keeps the methods independent of transformers' cache keyword (``cache`` in 5.2x,
    ``past_key_values`` before).
    """

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.body = lm.model
        self.embed = lm.get_input_embeddings()
        self.config = lm.config
        params = inspect.signature(self.body.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.config)
        except TypeError:  # pragma: no cover - older transformers
            return DynamicCache()

    def hidden(self, *, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
               cache: Any = None) -> Tensor:
        """``[L]`` ids or ``[L, H]`` embeddings of one sequence -> ``[L, H]`` last hidden states."""
        kwargs: dict[str, Any] = {"use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_kw] = cache
        if input_ids is not None:
            out = self.body(input_ids=input_ids.unsqueeze(0), **kwargs)
        else:
            assert inputs_embeds is not None
            out = self.body(inputs_embeds=inputs_embeds.unsqueeze(0), **kwargs)
        return out.last_hidden_state[0]

    def logits(self, hidden: Tensor) -> Tensor:
        """Full-vocabulary next-token logits of one position (what greedy generation computes)."""
        return self.lm.lm_head(hidden)


# ---------------------------------------------------------------- synthetic text
class SyntheticTokenizer:
    """Word-level stand-in for a tokenizer, so the real ``ResRankModel`` / ``Encoder`` run on any
    backbone shape offline: the word ``w<k>`` is token ``k``; any other word (the prompt's
    instruction and labels) maps to a stable id in the text range. No BOS/CLS; EOS = ``EOS_ID``.
    """

    cls_token_id = None
    bos_token_id = None
    sep_token_id = None
    eos_token_id = EOS_ID
    pad_token_id = 0
    eos_token = "</s>"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def _ids(self, text: str) -> list[int]:
        out = []
        for word in text.split():
            if word[0] == "w" and word[1:].isdigit() and int(word[1:]) < self.vocab_size:
                out.append(int(word[1:]))
            else:
                out.append(FIRST_TEXT_ID + zlib.crc32(word.encode()) % (self.vocab_size - FIRST_TEXT_ID))
        return out

    def __call__(self, texts: str | list[str], add_special_tokens: bool = False, **_: Any) -> dict[str, Any]:
        if isinstance(texts, str):
            return {"input_ids": self._ids(texts)}
        return {"input_ids": [self._ids(t) for t in texts]}

    def pad(self, batch: dict[str, list[list[int]]], padding: bool = True, return_tensors: str = "pt",
            **_: Any) -> dict[str, Tensor]:
        rows = batch["input_ids"]
        width = max((len(r) for r in rows), default=0)
        ids = torch.tensor([list(r) + [self.pad_token_id] * (width - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}


def reranker_config(depth: int, max_query_length: int = 4096) -> Any:
    """The paper's one-step model: identity projector, plain residual sum, query-first prompt."""
    from resrank.config import RerankerConfig

    return RerankerConfig(
        model="bench-random-qwen3", projector="identity", residual=True, residual_scale=1.0, residual_norm=False,
        scoring="one-step", prompt_order="query-first", instruction="Rank the passages by relevance to the query.",
        max_query_length=max_query_length, depth=depth, batch_size=1,
    )


def accept_cache_keyword(model: Any) -> Any:
    """Let ``model(..., cache=...)`` work on transformers releases whose keyword is ``past_key_values``.

    ``ResRankModel`` passes ``cache=`` (transformers >= 5.2x); an older release would take
    it into ``**kwargs`` and silently decode without a KV cache.
    """
    if "cache" in inspect.signature(model.forward).parameters:
        return model
    original = model.forward

    def forward(*args: Any, cache: Any = None, **kwargs: Any) -> Any:
        if cache is not None:
            kwargs["past_key_values"] = cache
        return original(*args, **kwargs)

    model.forward = forward
    return model


@dataclass
class Systems:
    """Everything the methods run on: one reranker LM shared by all of them, the encoder."""

    backbone: Backbone  # the reranker LM (full-text methods use its LM head)
    resrank: Any  # ResRankModel(encoder, backbone.body, ...): same reranker weights
    encoder: Any  # resrank.model.encoder.Encoder over a Qwen3Model of the same shape
    tokenizer: SyntheticTokenizer


def build_systems(backbone: str, device: torch.device, dtype: torch.dtype, seed: int, depth: int) -> Systems:
    from resrank.model.encoder import Encoder
    from resrank.model.resrank import ResRankModel

    lm = build_backbone(backbone, device, dtype, seed)
    bb = Backbone(lm)
    accept_cache_keyword(bb.body)
    tokenizer = SyntheticTokenizer(int(lm.config.vocab_size))
    enc_model = build_backbone(backbone, device, dtype, seed + 1, lm_head=False)
    encoder = Encoder(enc_model, tokenizer, pooling="last", max_length=32768, batch_size=ENCODE_BATCH)
    model = ResRankModel(encoder, bb.body, tokenizer, reranker_config(depth)).eval()
    return Systems(bb, model, encoder, tokenizer)


# --------------------------------------------------------------------- workload
@dataclass
class Workload:
    """One query's synthetic candidate list (token ids are what a tokenizer would have produced)."""

    query: str  # the query text for ResRankModel: its prompt has exactly ``len(prefix_ids)`` tokens
    prefix_ids: Tensor  # [q] instruction + query tokens of the full-text prompts
    passage_ids: Tensor  # [n, p]
    passage_id_lists: list[list[int]]  # the same, as a tokenizer returns them (encoder input)
    passage_embeddings: Tensor | None = None  # [n, H] float32, L2-normalised, from the encoder (offline)

    @property
    def n(self) -> int:
        return int(self.passage_ids.shape[0])


def make_workload(systems: Systems, n: int, query_tokens: int, passage_tokens: int, seed: int,
                  device: str | torch.device) -> Workload:
    """Random ids; the query's word count makes ResRank's prompt (instruction, labels, query) ``query_tokens``."""
    vocab = systems.tokenizer.vocab_size
    overhead = systems.resrank.prompt_length("", 0) - 1  # instruction + labels (minus the summary token)
    words = query_tokens - overhead
    if words < 1:
        raise ResRankError(f"query_tokens={query_tokens} leaves no room for a query after the {overhead}-token "
                           "instruction and labels of the ResRank prompt")
    gen = torch.Generator().manual_seed(seed)
    query = " ".join(f"w{i}" for i in torch.randint(FIRST_TEXT_ID, vocab, (words,), generator=gen).tolist())
    prefix = torch.randint(FIRST_TEXT_ID, vocab, (query_tokens,), generator=gen)
    passages = torch.randint(FIRST_TEXT_ID, vocab, (n, passage_tokens), generator=gen)
    return Workload(query, prefix.to(device), passages.to(device), passages.tolist())


def sliding_windows(n: int, window: int = WINDOW, step: int = STEP) -> list[tuple[int, int]]:
    """``(start, end)`` windows from the back of a list of ``n`` (rank_llm's loop).

    A list no longer than the window is one window; otherwise windows of ``window``
    passages move ``step`` towards the top, and the last one is clipped at 0 (it is
    skipped only when it would repeat the previous window's top).
    """
    if n <= 0:
        return []
    if n <= window:
        return [(0, n)]
    windows = []
    end, start = n, n - window
    while end > 0 and start + step != 0:
        start = max(start, 0)
        windows.append((start, end))
        end, start = end - step, start - step
    return windows


def window_count(n: int, window: int = WINDOW, step: int = STEP) -> int:
    """Closed form of ``len(sliding_windows(n))``: 1 up to the window, else ``ceil((n - w) / s) + 1``."""
    if n <= 0:
        return 0
    return 1 if n <= window else math.ceil((n - window) / step) + 1


def expected_cost(method: str, n: int, query_tokens: int = QUERY_TOKENS, passage_tokens: int = PASSAGE_TOKENS) -> Cost:
    """The per-query cost each method must report, from the definitions in the module docstring."""
    q, p = query_tokens, passage_tokens
    if method == "resrank":
        return Cost(1, q + n + 1, 0)
    if method == "resrank-autoregressive":
        return Cost(n, (q + n + 1) + (n - 1), n)
    if method == "fulltext-onestep":
        return Cost(1, q + n * (PROMPT_ID_TOKENS + p) + 1, 0)
    if method == "fulltext-generate":
        cost = Cost()
        for start, end in sliding_windows(n):
            m = end - start
            prompt = q + m * (PROMPT_ID_TOKENS + p) + 1
            cost.forward_passes += GEN_TOKENS_PER_ID * m
            cost.generated_tokens += GEN_TOKENS_PER_ID * m
            cost.processed_tokens += prompt + GEN_TOKENS_PER_ID * m - 1
        return cost
    if method == ENCODING:
        return Cost(math.ceil(n / ENCODE_BATCH), n * p, 0)
    raise ResRankError(f"unknown efficiency method '{method}'; known: {', '.join((*METHODS, ENCODING))}")


# ---------------------------------------------------------------------- methods
def encode_passages(systems: Systems, wl: Workload, cost: Cost) -> Tensor:
    """Offline step: ``Encoder.embed_ids`` over the passages in batches (last-token pooling, L2 norm)."""
    chunks = []
    for start in range(0, wl.n, ENCODE_BATCH):
        ids = wl.passage_id_lists[start:start + ENCODE_BATCH]
        chunks.append(systems.encoder.embed_ids(ids))
        cost.forward(sum(len(r) for r in ids))
    out = torch.cat(chunks).float()
    wl.passage_embeddings = out
    return out.cpu()


def _embeddings(wl: Workload) -> Tensor:
    if wl.passage_embeddings is None:
        raise ResRankError("passage embeddings missing: encode the passages first (offline step)")
    return wl.passage_embeddings


def resrank_onestep(systems: Systems, wl: Workload, cost: Cost) -> Tensor:
    """``ResRankModel.forward``: one pass, ``s_i = cos(q, h_i + e_i)``; returns the ranking."""
    out = systems.resrank([wl.query], [_embeddings(wl)])
    cost.forward_passes += out.forward_passes
    cost.processed_tokens += out.processed_tokens[0]
    cost.generated_tokens += out.generated_tokens[0]
    return out.scores[0].argsort(descending=True).cpu()


def resrank_autoregressive(systems: Systems, wl: Workload, cost: Cost) -> Tensor:
    """``ResRankModel.rank_autoregressive``: constrained decoding over the compressed input, KV cache."""
    (result,) = systems.resrank.rank_autoregressive([wl.query], [_embeddings(wl)])
    cost.forward_passes += result.forward_passes
    cost.processed_tokens += result.processed_tokens
    cost.generated_tokens += result.generated_tokens
    return torch.tensor(result.order)


def _fulltext_prompt(wl: Workload, indices: Tensor) -> Tensor:
    """prefix ; for each passage k: "[" id_k "]" text ; EOS  (identifiers local to the prompt)."""
    device = wl.prefix_ids.device
    m = indices.shape[0]
    local = torch.arange(m, device=device)
    marks = torch.stack([
        torch.full((m,), LBRACKET_ID, device=device),
        ID_BASE + local % WINDOW,
        torch.full((m,), RBRACKET_ID, device=device),
    ], dim=1)
    blocks = torch.cat([marks, wl.passage_ids.index_select(0, indices)], dim=1).reshape(-1)
    eos = torch.full((1,), EOS_ID, dtype=torch.long, device=device)
    return torch.cat([wl.prefix_ids, blocks, eos])


def fulltext_onestep(systems: Systems, wl: Workload, cost: Cost) -> Tensor:
    """Passage texts in the prompt, one pass, cosine of the final token with each passage's last token."""
    bb, n = systems.backbone, wl.n
    ids = _fulltext_prompt(wl, torch.arange(n, device=wl.prefix_ids.device))
    h = bb.hidden(input_ids=ids)
    cost.forward(ids.shape[0])
    block = PROMPT_ID_TOKENS + wl.passage_ids.shape[1]
    ends = wl.prefix_ids.shape[0] + (torch.arange(n, device=h.device) + 1) * block - 1
    scores = F.cosine_similarity(h[-1].float().unsqueeze(0), h.index_select(0, ends).float(), dim=-1)
    return scores.argsort(descending=True).cpu()


def fulltext_generate(systems: Systems, wl: Workload, cost: Cost) -> Tensor:
    """RankGPT sliding windows; greedy permutation generation "[3] > [1] > ..." with a KV cache."""
    bb = systems.backbone
    device = wl.prefix_ids.device
    order = list(range(wl.n))
    forced = {phase: torch.full((1,), t, dtype=torch.long, device=device)
              for phase, t in ((0, LBRACKET_ID), (2, RBRACKET_ID), (3, SEPARATOR_ID))}
    for start, end in sliding_windows(wl.n):
        window = order[start:end]
        m = len(window)
        ids = _fulltext_prompt(wl, torch.tensor(window, device=device))
        cache = bb.new_cache()
        state = bb.hidden(input_ids=ids, cache=cache)[-1]
        cost.forward(ids.shape[0])
        blocked = torch.zeros(m, dtype=torch.bool, device=device)
        picks = []
        steps = GEN_TOKENS_PER_ID * m
        for t in range(steps):
            logits = bb.logits(state)  # the full-vocabulary head runs every step, as in generate()
            phase = t % GEN_TOKENS_PER_ID
            if phase == 1:  # the identifier: greedy among the identifiers not yet emitted
                local = logits[ID_BASE:ID_BASE + m].float().masked_fill(blocked, float("-inf")).argmax().view(1)
                blocked.index_fill_(0, local, True)
                picks.append(local)
                token = local + ID_BASE
            else:  # "[", "]" and ">" are forced, so the output is always a valid permutation
                token = forced[phase]
            cost.generated_tokens += 1
            if t == steps - 1:
                break
            state = bb.hidden(input_ids=token, cache=cache)[-1]
            cost.forward(1)
        permutation = torch.cat(picks).tolist()  # parse the output: one host sync per window
        order[start:end] = [window[k] for k in permutation]
    return torch.tensor(order)


RUNNERS: dict[str, Callable[[Systems, Workload, Cost], Tensor]] = {
    "resrank": resrank_onestep,
    "resrank-autoregressive": resrank_autoregressive,
    "fulltext-onestep": fulltext_onestep,
    "fulltext-generate": fulltext_generate,
}


# ------------------------------------------------------------------ measurement
def resolve_device(device: str | None) -> torch.device:
    name = (device or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ResRankError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ResRankError(f"unknown device '{device}'; use cpu, cuda or auto")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ResRankError(f"unknown dtype '{dtype}'; use {', '.join(_DTYPES)} or auto")
    return _DTYPES[name]


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call: CUDA events (+ synchronize) on GPU, perf_counter on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_M_MMAP_THRESHOLD = -3


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


def _set_mmap_threshold(nbytes: int) -> None:
    """glibc: serve allocations >= nbytes with mmap (returned to the OS on free). No-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, nbytes)


def _release_free_heap() -> None:
    """glibc ``malloc_trim(0)``: give free heap pages back, so reusing them shows up in RSS again."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _rss_peak(interval_s: float = 2e-4) -> Iterator[list[int]]:
    """Yield a one-element list that holds, on exit, the peak RSS increase in bytes."""
    gc.collect()
    _release_free_heap()
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    result = [0]
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        result[0] = max(0, peak[0] - base)


def _peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with _rss_peak() as result:
        fn()
    return result[0] / 2**20


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@torch.inference_mode()
def run_efficiency(
    backbone: str = "small",
    n_candidates: Sequence[int] = (10, 20, 50, 100),
    repeats: int = 5,
    passage_tokens: int = PASSAGE_TOKENS,
    device: str | None = "cpu",
    dtype: str | torch.dtype | None = "auto",
    seed: int = 13,
    *,
    query_tokens: int = QUERY_TOKENS,
    warmup: int = 1,
    methods: Sequence[str] = METHODS,
    threads: int | None = None,
    max_seconds: float | None = None,
    measure_memory: bool = True,
) -> list[Row]:
    """Measure every method at every ``n``; rows for ``methods`` then ``passage-encoding`` (offline).

    ``max_seconds`` bounds the timed loop: once exceeded, no further repeat is started
    (at least one always runs); the rows record how many latencies were taken.
    """
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise ResRankError(f"unknown efficiency method(s) {unknown}; known: {', '.join(METHODS)}")
    if repeats < 1 or warmup < 0:
        raise ResRankError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    if not n_candidates or min(n_candidates) < 1:
        raise ResRankError(f"n_candidates must be a non-empty list of positive integers, got {list(n_candidates)}")
    if query_tokens < 1 or passage_tokens < 1:
        raise ResRankError("query_tokens and passage_tokens must be positive")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(backbone, sorted(set(int(n) for n in n_candidates)), repeats, passage_tokens, dev, dt, seed,
                        query_tokens, warmup, methods, max_seconds, measure_memory)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(backbone: str, ns: list[int], repeats: int, passage_tokens: int, dev: torch.device, dt: torch.dtype,
             seed: int, query_tokens: int, warmup: int, methods: Sequence[str], max_seconds: float | None,
             measure_memory: bool) -> list[Row]:
    log.info("building %s reranker and encoder (%s, %s)", backbone, dev, dt)
    systems = build_systems(backbone, dev, dt, seed, depth=max(ns))
    workloads = {n: make_workload(systems, n, query_tokens, passage_tokens, seed + 2 + n, dev) for n in ns}
    labels = [*methods, ENCODING]

    def call(method: str, n: int) -> Cost:
        cost = Cost()
        if method == ENCODING:
            encode_passages(systems, workloads[n], cost)
        else:
            RUNNERS[method](systems, workloads[n], cost)
        return cost

    costs: dict[tuple[str, int], Cost] = {}
    memory: dict[tuple[str, int], float] = {}
    cuda_memory = measure_memory and dev.type == "cuda"
    def warm(label: str, n: int) -> None:
        costs[label, n] = call(label, n)

    for n in ns:  # warm-up (the encoding first: it produces the embeddings ResRank reads)
        for label in [ENCODING, *methods]:
            for _ in range(max(1, warmup) - 1):
                warm(label, n)
            if cuda_memory:  # reading the CUDA peak counter costs nothing: take it in the last warm-up run
                memory[label, n] = _peak_memory_mb(lambda label=label, n=n: warm(label, n), dev)
            else:
                warm(label, n)
            log.info("warm-up %s n=%d: %s", label, n, costs[label, n])

    latencies: dict[tuple[str, int], list[float]] = {(label, n): [] for label in labels for n in ns}
    began = time.perf_counter()
    for rep in range(repeats):
        if rep and max_seconds is not None and time.perf_counter() - began > max_seconds:
            log.warning("time budget of %.0fs spent after %d repeat(s); stopping", max_seconds, rep)
            break
        for n in ns:
            shift = rep % len(labels)
            for label in labels[shift:] + labels[:shift]:
                box: dict[str, Cost] = {}

                def once(label: str = label, n: int = n, box: dict[str, Cost] = box) -> None:
                    box["cost"] = call(label, n)

                latencies[label, n].append(_timed(once, dev))
                if box["cost"] != costs[label, n]:
                    raise RuntimeError(f"{label} n={n}: cost changed between runs ({box['cost']} vs {costs[label, n]})")
        log.info("repeat %d/%d done (%.1fs)", rep + 1, repeats, time.perf_counter() - began)

    if measure_memory and dev.type == "cpu":  # RSS sampling would perturb the timings: a pass of its own
        _set_mmap_threshold(1 << 16)
        try:
            for n in ns:
                for label in labels:
                    memory[label, n] = _peak_memory_mb(lambda label=label, n=n: call(label, n), dev)
        finally:
            _set_mmap_threshold(32 << 20)  # glibc's dynamic-threshold ceiling: heap reuse again

    rows = []
    for label in labels:
        for n in ns:
            lat = latencies[label, n]
            cost = costs[label, n]
            rows.append(Row(
                method=label,
                n_candidates=n,
                median_latency_s=statistics.median(lat),
                p90_latency_s=_percentile(lat, 90),
                forward_passes=cost.forward_passes,
                processed_tokens=cost.processed_tokens,
                generated_tokens=cost.generated_tokens,
                peak_memory_mb=round(memory.get((label, n), float("nan")), 3),
                latencies_s=lat,
                backbone=backbone,
                device=str(dev),
                dtype=str(dt).replace("torch.", ""),
                query_tokens=query_tokens,
                passage_tokens=passage_tokens,
                threads=torch.get_num_threads(),
            ))
    return rows


# ---------------------------------------------------------------------- summary
def growth_exponents(rows: Sequence[Row], low: int = 20, high: int = 100) -> dict[str, dict[str, float | None]]:
    """Slope of log(median latency) vs log(n) per method: least squares over all n, and ``low``->``high``."""
    out: dict[str, dict[str, float | None]] = {}
    for method in dict.fromkeys(r.method for r in rows):
        points = {r.n_candidates: r.median_latency_s for r in rows if r.method == method and r.median_latency_s > 0}
        xs = [math.log(n) for n in points]
        ys = [math.log(points[n]) for n in points]
        overall = None
        if len(xs) >= 2:
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            overall = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        pair = None
        if low in points and high in points:
            pair = math.log(points[high] / points[low]) / math.log(high / low)
        out[method] = {"overall": overall, f"{low}-{high}": pair}
    return out


def speedups(rows: Sequence[Row], reference: str = "resrank") -> dict[str, dict[int, float]]:
    """Median latency of each method / the reference's, per n."""
    ref = {r.n_candidates: r.median_latency_s for r in rows if r.method == reference}
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.method in (reference, ENCODING) or r.n_candidates not in ref or ref[r.n_candidates] <= 0:
            continue
        out.setdefault(r.method, {})[r.n_candidates] = r.median_latency_s / ref[r.n_candidates]
    return out


def acceptance(rows: Sequence[Row]) -> dict[str, Any]:
    """The project's efficiency targets at the largest n measured (reported, never enforced)."""
    by = {(r.method, r.n_candidates): r for r in rows}
    n = max(r.n_candidates for r in rows)
    out: dict[str, Any] = {"n": n}
    res = by.get(("resrank", n))
    if res is None:
        return out
    for other, target in (("fulltext-generate", 10.0), ("resrank-autoregressive", 3.0)):
        if (other, n) in by:
            ratio = by[other, n].median_latency_s / res.median_latency_s
            out[f"speedup_vs_{other}"] = {"value": ratio, "target": target, "met": ratio >= target}
    q = res.query_tokens
    out["resrank_tokens"] = {
        "processed": res.processed_tokens, "expected": q + n + 1, "generated": res.generated_tokens,
        "met": res.processed_tokens == q + n + 1 and res.generated_tokens == 0,
    }
    slope = growth_exponents(rows).get("resrank", {}).get("20-100")
    if slope is not None:
        out["resrank_exponent_20_100"] = {"value": slope, "target": 1.2, "met": slope <= 1.2}
    return out


# ----------------------------------------------------------------------- writers
def write_csv(rows: Sequence[Row], path: str | Path) -> None:
    """``efficiency.csv``: exactly ``CSV_COLUMNS``, the four reranking methods only."""
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            if row.method in METHODS:
                writer.writerow(row.csv_record())


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(rows: Sequence[Row], machine: dict[str, Any] | None = None) -> str:
    """``efficiency.md``: per-method table, speedups, growth exponents, offline encoding, definitions."""
    first = rows[0]
    reps = max(len(r.latencies_s) for r in rows)
    exps = growth_exponents([r for r in rows if r.method != ENCODING])
    speed = speedups(rows)
    out = io.StringIO()
    out.write("# Efficiency: compressed (ResRank) vs full-text listwise reranking\n\n")
    out.write(
        f"Backbone `{first.backbone}` (Qwen3 architecture, random weights), {first.device}, {first.dtype}, "
        f"{first.threads} torch thread(s); "
        f"query {first.query_tokens} tokens, passages {first.passage_tokens} tokens; "
        f"median and p90 over {reps} repeats per query after warm-up.\n\n"
    )
    out.write("| method | n | median latency (ms) | p90 (ms) | forward passes | processed tokens | generated tokens "
              "| peak memory (MiB) | latency / resrank |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        if r.method == ENCODING:
            continue
        ratio = speed.get(r.method, {}).get(r.n_candidates, 1.0 if r.method == "resrank" else None)
        out.write(f"| {r.method} | {r.n_candidates} | {r.median_latency_s * 1e3:.1f} | {r.p90_latency_s * 1e3:.1f} "
                  f"| {r.forward_passes} | {r.processed_tokens} | {r.generated_tokens} | {_fmt(r.peak_memory_mb, 1)} "
                  f"| {_fmt(ratio)}x |\n")
    out.write("\n## Growth exponents (slope of log latency vs log n)\n\n| method | all n (least squares) "
              "| n = 20 -> 100 |\n|---|---:|---:|\n")
    for method, e in exps.items():
        out.write(f"| {method} | {_fmt(e['overall'])} | {_fmt(e['20-100'])} |\n")
    enc = [r for r in rows if r.method == ENCODING]
    if enc:
        out.write("\n## Offline passage encoding (not part of ResRank's query latency)\n\n"
                  "| n passages | median (ms) | p90 (ms) | encoder forward passes | encoded tokens "
                  "| peak memory (MiB) |\n|---:|---:|---:|---:|---:|---:|\n")
        for r in enc:
            out.write(f"| {r.n_candidates} | {r.median_latency_s * 1e3:.1f} | {r.p90_latency_s * 1e3:.1f} "
                      f"| {r.forward_passes} | {r.processed_tokens} | {_fmt(r.peak_memory_mb, 1)} |\n")
    checks = acceptance([r for r in rows if r.method != ENCODING])
    if len(checks) > 1:
        out.write(f"\n## Targets at n = {checks['n']}\n\n")
        for key, value in checks.items():
            if isinstance(value, dict):
                shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in value.items()}
                out.write(f"* {key}: {shown}\n")
    out.write(
        "\n## Definitions\n\n"
        "* latency: wall time of one query's reranking (CUDA events + synchronize on GPU), excluding tokenization "
        "and the offline passage encoding.\n"
        "* processed tokens: positions the reranker runs a forward pass over (prompts + generated tokens fed back); "
        "generated tokens: tokens emitted (passages, for resrank-autoregressive).\n"
        f"* fulltext-generate: sliding window {WINDOW} / step {STEP} from the back, {GEN_TOKENS_PER_ID} tokens per "
        "identifier; full-text prompts omit RankGPT's chat turns and post-prompt, so their costs are lower bounds.\n"
        "* peak memory: increase over the resident memory before the call (GPU: max_memory_allocated; CPU: sampled "
        "RSS, approximate).\n"
    )
    if machine:
        hw = machine.get("hardware", machine)
        out.write(f"\nMachine: {json.dumps(hw, sort_keys=True)}\n")
    return out.getvalue()


def plot(rows: Sequence[Row], png: str | Path, pdf: str | Path | None = None) -> None:
    """Log-log latency vs n, one line per method (exponent in the legend), encoding dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exps = growth_exponents(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = dict(zip((*METHODS, ENCODING), "osD^x", strict=True))
    for method in dict.fromkeys(r.method for r in rows):
        pts = sorted((r.n_candidates, r.median_latency_s) for r in rows if r.method == method)
        slope = exps[method]["overall"]
        label = method if method != ENCODING else "passage encoding (offline)"
        label += f" (slope {slope:.2f})" if slope is not None else ""
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(method, "."), label=label,
                linestyle="--" if method == ENCODING else "-", color="grey" if method == ENCODING else None)
    first = rows[0]
    ns = sorted({r.n_candidates for r in rows})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("candidates per query, n (passages)")
    ax.set_ylabel("median latency per query (s)")
    ax.set_title(f"{first.backbone} Qwen3 backbone (random weights), {first.device}, {first.dtype}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        if path is None:
            continue
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format=fmt, dpi=150)
    plt.close(fig)


def write_outputs(rows: Sequence[Row], out_dir: str | Path, fig_dir: str | Path | None = None,
                  machine: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``efficiency.{csv,md,json}`` to ``out_dir`` and ``efficiency.{png,pdf}`` to ``fig_dir``."""
    if not rows:
        raise ResRankError("no efficiency rows to write")
    out_dir = Path(out_dir)
    fig_dir = Path(fig_dir) if fig_dir is not None else out_dir
    if machine is None:
        from resrank.provenance import provenance

        machine = provenance()
    paths = {
        "csv": out_dir / "efficiency.csv",
        "md": out_dir / "efficiency.md",
        "json": out_dir / "efficiency.json",
        "png": fig_dir / "efficiency.png",
        "pdf": fig_dir / "efficiency.pdf",
    }
    online = [r for r in rows if r.method != ENCODING]
    write_csv(rows, paths["csv"])
    with atomic_write(paths["md"]) as handle:
        handle.write(markdown(rows, machine))
    write_json(paths["json"], {
        "settings": settings or {},
        "columns": list(CSV_COLUMNS),
        "rows": [asdict(r) for r in online],
        "offline_encoding": [asdict(r) for r in rows if r.method == ENCODING],
        "growth_exponents": growth_exponents(online),
        "speedup_vs_resrank": {m: {str(n): v for n, v in d.items()} for m, d in speedups(rows).items()},
        "targets": acceptance(online),
        "definitions": {
            "window": WINDOW, "step": STEP, "generated_tokens_per_identifier": GEN_TOKENS_PER_ID,
            "prompt_identifier_tokens": PROMPT_ID_TOKENS, "encode_batch": ENCODE_BATCH,
            "peak_memory_mb": "MiB above the resident memory before the call (GPU: max_memory_allocated; "
                              "CPU: sampled RSS with glibc mmap threshold 64 KiB)",
        },
        "machine": machine,
    })
    plot(rows, paths["png"], paths["pdf"])
    return paths


def read_csv_columns(path: str | Path) -> list[str]:
    """Header of an ``efficiency.csv`` (used by checks and the report)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle))
