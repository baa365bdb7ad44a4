"""ResRank: listwise reranking with one embedding per passage, a residual connection and
one-step cosine scoring (arXiv 2604.22180), in one file, readable top to bottom.

Notation (see ``/work/shared/docs/method.md`` §1-§3):

* ``E`` encoder-LLM (``resrank.model.encoder.Encoder``): passage ``p_i`` -> ``e_i`` (L2-normalised).
* ``P`` projector from ``E``'s hidden size ``H_e`` to the reranker's ``H``: identity when
  the sizes match (the paper's Qwen3-Embedding-4B / Qwen3-4B pairing), else linear or
  Linear-GELU-Linear (as PE-Rank).
* ``R`` reranker-LLM (any Hugging Face ``AutoModel`` that accepts ``inputs_embeds``):
  causal decoders (Qwen3) and bidirectional encoders (BERT / MiniLM).

Input sequence of ``R`` for one query (``prompt_order="query-first"``, the default)::

    [CLS]  instruction  "Query:" q_1..q_m  "Passages:"  P(e_1) .. P(e_n)  [EOS]
    ^ BERT-like only    ^ ordinary token embeddings     ^ one slot each   ^ summary token

``"passages-first"`` moves the query text after the slots::

    [CLS]  instruction  "Passages:"  P(e_1) .. P(e_n)  "Query:" q_1..q_m  [EOS]

Text tokens are looked up in ``R``'s own input embedding table; each passage slot carries
the vector ``P(e_i)`` directly; the summary token is the tokenizer's EOS (``[SEP]`` for
BERT tokenizers, which have no EOS). ``[CLS]`` is prepended for bidirectional backbones
whose tokenizer has one (a causal backbone gets its BOS, if the tokenizer has one).
Token-type ids are zero and position ids are the defaults. Queries in a batch are right
padded; with a causal mask, or a padding mask for encoders, padding cannot change the
real positions, so a query's scores do not depend on its batch mates.

**One-step scoring** (the paper's model). With ``H`` = ``R``'s last hidden states::

    h_i = H[slot_i]                         contextualised passage state
    r_i = h_i + alpha * P(e_i)              residual passage representation
    q   = H[summary]                        query/list summary
    s_i = cos(q, r_i)

``residual=False`` gives the "no residual" ablation ``r_i = h_i``; ``residual_norm``
L2-normalises ``h_i`` and ``P(e_i)`` before the sum; ``alpha = residual_scale`` (1 in the
paper's reading). ``query_residual`` (off in the paper's reading) mirrors the residual on
the query side, ``q = H[summary] + alpha * P(E(query))`` with ``E(query)`` the encoder's
query vector: the untrained model then scores close to the encoder's own cosine and
training learns a listwise correction (the default CPU profile's choice, docs/fidelity.md);
without the residual (``residual=False``) it is off too. One forward pass of ``R`` scores
the whole list: it processes ``prompt + n + 1`` tokens and generates none (the query
residual adds one encoder pass over the query text, as dense retrieval needs anyway).
Scores are raw cosines; the training losses divide by their temperature.

**Autoregressive ablation** (PE-Rank style dynamic constrained decoding, method.md §3).
The same prompt (the summary token now means "start ranking") is run once; then at step
``t`` with hidden state ``g_t`` (``g_0`` = state at the summary token)::

    logit_t(j) = cos(g_t, r_j) / tau   for passages j not yet emitted, -inf otherwise
    j_t        = argmax_j logit_t(j)
    g_{t+1}    = R's last hidden state after feeding P(e_{j_t}) as the next input token

A causal backbone keeps a KV cache, so every step after the first processes exactly one
new token; ``n`` steps emit ``n`` passages in ``n`` forward passes (the final, forced step
is still computed, as an LLM computes the logits of its last generated token).

Bidirectional backbones (BERT / MiniLM, the default CPU profile) have no KV cache. They
run the fed-back passages under a *prefix-LM* mask: the prompt attends bidirectionally
within itself only, each appended token attends to the prompt and to the appended
tokens up to itself. The prompt's states therefore never change, which makes the
decoder well defined and teacher forcing exact; each step re-runs the whole sequence and
is counted honestly (``processed_tokens`` grows by the full length per step).

``teacher_forced_logits`` appends the target order's slot vectors ``P(e_{o_0}) ..
P(e_{o_{n-2}})`` to the prompt and reads all ``n`` steps' logits from ONE forward pass
(causal, or prefix-LM for encoders); it equals step-by-step decoding along the same
order and feeds the ListMLE loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resrank.config import EncoderConfig, RerankerConfig
from resrank.errors import ResRankError
from resrank.model.encoder import Encoder

PROJECTORS = ("auto", "identity", "linear", "mlp")
PROMPT_ORDERS = ("query-first", "passages-first")


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


@dataclass
class RerankOutput:
    """One-step scores for a batch of queries (row b = query b, column i = passage i)."""

    scores: Tensor  # [B, N_max] float32 cos(q, r_i); -inf at padding
    mask: Tensor  # [B, N_max] bool, True for real passages
    query_states: Tensor  # [B, H] float32, q (summary-token state)
    passage_states: Tensor  # [B, N_max, H] float32, r_i (zeros at padding)
    forward_passes: int  # reranker forward passes for the whole batch (1)
    processed_tokens: list[int]  # per query: prompt tokens + n + 1 (real, non-pad)
    generated_tokens: list[int]  # per query: 0


@dataclass
class AutoregressiveResult:
    """The decoded ranking of one query and what it cost."""

    order: list[int]  # passage indices, best first (a full permutation of range(n))
    scores: list[float]  # aligned with ``order``: n - position, strictly decreasing
    forward_passes: int  # reranker passes that involved this query (n; 1 for an empty list)
    processed_tokens: int  # tokens fed to the reranker for this query over all passes
    generated_tokens: int  # emitted passage tokens (n)
    step_logits: Tensor  # [n, n] float32 CPU: row t = cos(g_t, r_j), emitted passages -inf

    @property
    def passage_scores(self) -> list[float]:
        """Scores aligned with the input passage index (for writing runs)."""
        out = [0.0] * len(self.order)
        for idx, score in zip(self.order, self.scores, strict=True):
            out[idx] = score
        return out


# --------------------------------------------------------------------------------------
# Projector P: encoder space -> reranker input space
# --------------------------------------------------------------------------------------


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """``identity`` | ``linear`` | ``mlp`` (Linear-GELU-Linear) | ``auto`` (identity iff sizes match, else mlp)."""
    if kind not in PROJECTORS:
        raise ResRankError(f"reranker.projector: unknown projector '{kind}'; known: {', '.join(PROJECTORS)}")
    if kind == "auto":
        kind = "identity" if in_dim == out_dim else "mlp"
    if kind == "identity":
        if in_dim != out_dim:
            raise ResRankError(
                f"reranker.projector: 'identity' needs equal hidden sizes, but the encoder has {in_dim} and the "
                f"reranker {out_dim}; use projector 'linear', 'mlp' or 'auto'"
            )
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def is_causal_backbone(model: Any) -> bool:
    """True for decoders (Qwen3): their attention modules declare ``is_causal``; BERT's say False."""
    if not getattr(model.config, "is_causal", True):
        return False  # a decoder explicitly switched to bidirectional attention
    return any(getattr(module, "is_causal", False) is True for module in model.modules())


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Batched cosine ``[B, T, H] x [B, N, H] -> [B, T, N]`` as a matmul (no [B, T, N, H] tensor)."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(-1, -2)


# --------------------------------------------------------------------------------------
# Batch assembly
# --------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Right-padded reranker inputs for a batch of queries, plus where everything sits."""

    inputs_embeds: Tensor  # [B, L, H] (reranker dtype)
    attention_mask: Tensor  # [B, L] long
    slot_index: Tensor  # [B, N] position of passage i's slot (0 at padding)
    slot_mask: Tensor  # [B, N] bool
    projected: Tensor  # [B, N, H] float32 P(e_i) (zeros at padding)
    summary_index: Tensor  # [B] position of the summary token
    prompt_lengths: Tensor  # [B] real prompt length (through the summary token)
    appended_index: Tensor  # [B, A] positions of fed-back passage tokens (0 at padding)
    lengths: list[int]  # real sequence length per query

    @property
    def rows(self) -> Tensor:
        return torch.arange(self.inputs_embeds.shape[0], device=self.inputs_embeds.device)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class ResRankModel(nn.Module):
    """Encoder ``E`` + projector ``P`` + reranker ``R`` with one-step cosine scoring."""

    def __init__(self, encoder: Encoder, reranker: Any, tokenizer: Any, cfg: RerankerConfig) -> None:
        super().__init__()
        if cfg.prompt_order not in PROMPT_ORDERS:
            raise ResRankError(
                f"reranker.prompt_order: unknown order '{cfg.prompt_order}'; known: {', '.join(PROMPT_ORDERS)}"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.reranker = reranker
        self.tokenizer = tokenizer
        self.hidden_size = int(reranker.config.hidden_size)
        self.projector = build_projector(cfg.projector, encoder.hidden_size, self.hidden_size)
        self.is_causal = is_causal_backbone(reranker)
        self._init_prompt_pieces()

    @classmethod
    def from_config(cls, encoder_cfg: EncoderConfig, reranker_cfg: RerankerConfig) -> ResRankModel:
        """Load both backbones by name (``resrank.model.loading``) and build the projector."""
        from resrank.model.loading import load_backbone

        encoder = Encoder.from_config(encoder_cfg)
        reranker, tokenizer = load_backbone(reranker_cfg.model)
        return cls(encoder, reranker, tokenizer, reranker_cfg)

    @classmethod
    def from_checkpoint(
        cls, encoder_cfg: EncoderConfig, reranker_cfg: RerankerConfig, state_dict_path: str | Path
    ) -> ResRankModel:
        """``from_config`` then the weights of a safetensors ``state_dict`` file (strict)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(state_dict_path)
        if not path.is_file():
            raise ResRankError(f"{path}: checkpoint file not found")
        model = cls.from_config(encoder_cfg, reranker_cfg)
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ResRankError(
                f"{path}: not a readable safetensors checkpoint ({err}); the file is truncated or corrupt: "
                "re-run the training stage or copy the checkpoint again"
            ) from None
        model.load_checked_state_dict(state, source=str(path))
        return model

    def load_checked_state_dict(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Strict ``load_state_dict`` whose errors name the source and the offending tensor."""
        expected = self.state_dict()
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if wrong:
            key = wrong[0]
            more = f" (and {len(wrong) - 1} more mismatching tensors)" if len(wrong) > 1 else ""
            raise ResRankError(
                f"{source}: tensor '{key}' has shape {tuple(state[key].shape)} but the model built from the config "
                f"expects {tuple(expected[key].shape)}{more}; was the checkpoint trained with other encoder/reranker "
                "models or projector?"
            )
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            detail = "; ".join(parts)
            raise ResRankError(f"{source}: checkpoint does not match the model built from the config: {detail}")
        self.load_state_dict(state, strict=True)

    def save_checkpoint(self, path: str | Path) -> None:
        """Write ``state_dict()`` as safetensors (shared tensors are cloned so every key is stored)."""
        from safetensors.torch import save_file

        seen: set[int] = set()
        state = {}
        for key, tensor in self.state_dict().items():
            ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
            state[key] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
            seen.add(ptr)
        save_file(state, str(path))

    @property
    def device(self) -> torch.device:
        return next(self.reranker.parameters()).device

    # ---------------------------------------------------------------- prompt layout

    def _init_prompt_pieces(self) -> None:
        """Token ids of the fixed prompt parts, tokenized once."""
        tok = self.tokenizer

        def ids(text: str) -> list[int]:
            return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []

        if not self.is_causal and tok.cls_token_id is not None:
            self._head = [tok.cls_token_id]
        elif self.is_causal and tok.bos_token_id is not None:
            self._head = [tok.bos_token_id]
        else:
            self._head = []
        summary = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if summary is None:
            raise ResRankError(f"reranker '{self.cfg.model}': its tokenizer has neither an EOS nor a SEP token")
        self._summary = int(summary)
        instruction = self.cfg.instruction.strip()
        self._instruction = ids(instruction + "\n") if instruction else []
        if self.cfg.prompt_order == "query-first":
            self._query_label = ids("Query: ")
            self._passages_label = ids("\nPassages:")
        else:
            self._passages_label = ids("Passages:")
            self._query_label = ids("\nQuery: ")

    def _layout(self, query_ids: list[int], n: int) -> tuple[list[int], list[int], int]:
        """One prompt -> (token ids with -1 at slots, slot positions, summary position)."""
        query = [*self._query_label, *query_ids]
        slots = [-1] * n
        if self.cfg.prompt_order == "query-first":
            body = [*self._head, *self._instruction, *query, *self._passages_label, *slots]
        else:
            body = [*self._head, *self._instruction, *self._passages_label, *slots, *query]
        seq = [*body, self._summary]
        slot_positions = [i for i, t in enumerate(seq) if t == -1]
        return seq, slot_positions, len(seq) - 1

    def prompt_length(self, query: str, n: int) -> int:
        """Real input length for one query and ``n`` passages (= one-step processed tokens)."""
        return len(self._layout(self._query_ids([query])[0], n)[0])

    def _query_ids(self, queries: list[str]) -> list[list[int]]:
        ids = self.tokenizer(list(queries), add_special_tokens=False)["input_ids"] if queries else []
        return [list(row)[: self.cfg.max_query_length] for row in ids]

    def _check_lists(self, queries: list[str], passage_embeddings: list[Tensor]) -> list[Tensor]:
        """Validate one ``[n, H_e]`` tensor per query (an empty tensor of any shape means n = 0)."""
        if len(queries) != len(passage_embeddings):
            raise ResRankError(
                f"reranker: {len(queries)} queries but {len(passage_embeddings)} candidate lists; "
                "pass one list per query"
            )
        checked = []
        for emb in passage_embeddings:
            if emb.numel() == 0:
                emb = emb.reshape(0, self.encoder.hidden_size)
            checked.append(emb)
            if emb.ndim != 2 or emb.shape[1] != self.encoder.hidden_size:
                raise ResRankError(
                    f"reranker: passage embeddings must be [n, {self.encoder.hidden_size}] "
                    f"(the encoder's hidden size), got {tuple(emb.shape)}"
                )
            if emb.shape[0] > self.cfg.depth:
                raise ResRankError(f"candidate list of {emb.shape[0]} exceeds reranker.depth={self.cfg.depth}")
        return checked

    def _assemble(
        self,
        queries: list[str],
        passage_embeddings: list[Tensor],
        appended: list[list[int]] | None = None,
    ) -> _Batch:
        """Build right-padded ``inputs_embeds``; ``appended[b]`` = passages fed back after the prompt."""
        device = self.device
        embed_table = self.reranker.get_input_embeddings()
        dtype = embed_table.weight.dtype
        query_ids = self._query_ids(queries)
        counts = [int(e.shape[0]) for e in passage_embeddings]
        appended = appended if appended is not None else [[] for _ in queries]

        # P(e) for every passage of the batch at once, kept in float32 for the residual
        if sum(counts):
            stacked = torch.cat([e for e in passage_embeddings if e.shape[0]]).to(device)
            proj_param = next(self.projector.parameters(), None)
            stacked = stacked.to(proj_param.dtype if proj_param is not None else torch.float32)
            projected_flat = self.projector(stacked).float()
        else:
            projected_flat = torch.zeros(0, self.hidden_size, device=device)
        offsets = [sum(counts[:b]) for b in range(len(counts))]

        seqs, vec_src, slot_pos, summary_pos, prompt_lens, app_pos = [], [], [], [], [], []
        for b, (ids, n) in enumerate(zip(query_ids, counts, strict=True)):
            seq, slots, summary = self._layout(ids, n)
            src = [-1] * len(seq)
            for i, pos in enumerate(slots):
                src[pos] = offsets[b] + i
            prompt_lens.append(len(seq))
            positions = []
            for j in appended[b]:
                positions.append(len(seq))
                seq.append(-1)
                src.append(offsets[b] + j)
            seqs.append(seq)
            vec_src.append(src)
            slot_pos.append(slots)
            summary_pos.append(summary)
            app_pos.append(positions)

        lengths = [len(s) for s in seqs]
        max_positions = getattr(self.reranker.config, "max_position_embeddings", None)
        if max_positions is not None and lengths and max(lengths) > max_positions:
            raise ResRankError(
                f"reranker '{self.cfg.model}': input of {max(lengths)} tokens exceeds the backbone's "
                f"{max_positions} positions; lower reranker.depth or reranker.max_query_length"
            )
        width = max(lengths, default=0)
        n_max = max(counts, default=0)
        a_max = max((len(a) for a in appended), default=0)

        def padded(rows: list[list[int]], size: int, fill: int) -> Tensor:
            return torch.tensor([r + [fill] * (size - len(r)) for r in rows], dtype=torch.long, device=device).view(
                len(rows), size
            )

        token_ids = padded(seqs, width, -1)
        src_index = padded(vec_src, width, -1)
        attention_mask = padded([[1] * n for n in lengths], width, 0)
        embeds = embed_table(token_ids.clamp(min=0))
        is_vec = (src_index >= 0).unsqueeze(-1)
        if projected_flat.shape[0]:
            vectors = projected_flat.to(dtype)[src_index.clamp(min=0)]
            embeds = torch.where(is_vec, vectors, embeds)
        slot_index = padded(slot_pos, n_max, 0)
        slot_mask = padded([[1] * n for n in counts], n_max, 0).bool()
        projected = (
            projected_flat[padded([[offsets[b] + i for i in range(n)] for b, n in enumerate(counts)], n_max, 0)]
            if projected_flat.shape[0]
            else torch.zeros(len(queries), n_max, self.hidden_size, device=device)
        ) * slot_mask.unsqueeze(-1)
        return _Batch(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            slot_index=slot_index,
            slot_mask=slot_mask,
            projected=projected,
            summary_index=torch.tensor(summary_pos, dtype=torch.long, device=device),
            prompt_lengths=torch.tensor(prompt_lens, dtype=torch.long, device=device),
            appended_index=padded(app_pos, a_max, 0),
            lengths=lengths,
        )

    def _prefix_lm_mask(self, batch: _Batch) -> Tensor:
        """4D additive mask: prompt bidirectional within itself, appended tokens causal over everything."""
        width = batch.inputs_embeds.shape[1]
        pos = torch.arange(width, device=batch.inputs_embeds.device)
        real = batch.attention_mask.bool()[:, None, :]  # key is a real token
        in_prompt = pos[None, None, :] < batch.prompt_lengths[:, None, None]  # key inside the prompt
        causal = pos[None, None, :] <= pos[None, :, None]  # key not after the query position
        allowed = real & (in_prompt | causal)
        dtype = batch.inputs_embeds.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)

    def _run(self, batch: _Batch, **kwargs: Any) -> Tensor:
        """One reranker forward pass -> last hidden states ``[B, L, H]``."""
        mask: Tensor = batch.attention_mask
        if not self.is_causal and batch.appended_index.shape[1]:
            mask = self._prefix_lm_mask(batch)
        if self.is_causal:
            kwargs.setdefault("use_cache", False)
        out = self.reranker(inputs_embeds=batch.inputs_embeds, attention_mask=mask, **kwargs)
        return out.last_hidden_state

    def residual(self, h: Tensor, projected: Tensor) -> Tensor:
        """``r_i = h_i + alpha * P(e_i)`` (or ``h_i`` without residual; optionally both normalised)."""
        h = h.float()
        if not self.cfg.residual:
            return h
        projected = projected.float()
        if self.cfg.residual_norm:
            h = F.normalize(h, dim=-1)
            projected = F.normalize(projected, dim=-1)
        return h + self.cfg.residual_scale * projected

    def _states(self, batch: _Batch, hidden: Tensor, queries: list[str]) -> tuple[Tensor, Tensor]:
        """Hidden states -> (q at the summary token [B, H], r_i at the slots [B, N, H]), float32."""
        rows = batch.rows
        h = hidden[rows[:, None], batch.slot_index]
        r = self.residual(h, batch.projected) * batch.slot_mask.unsqueeze(-1)
        q = hidden[rows, batch.summary_index]
        if self.cfg.query_residual and self.cfg.residual:
            q = self.residual(q, self.projector(self.encoder(queries, "query")))
        return q.float(), r

    # ---------------------------------------------------------------- one-step scoring

    def forward(self, queries: list[str], passage_embeddings: list[Tensor]) -> RerankOutput:
        """Score every candidate of every query with ONE reranker pass: ``s_i = cos(q, r_i)``."""
        passage_embeddings = self._check_lists(queries, passage_embeddings)
        if not queries:
            empty = torch.zeros(0, 0, device=self.device)
            return RerankOutput(
                scores=empty,
                mask=empty.bool(),
                query_states=torch.zeros(0, self.hidden_size, device=self.device),
                passage_states=torch.zeros(0, 0, self.hidden_size, device=self.device),
                forward_passes=0,
                processed_tokens=[],
                generated_tokens=[],
            )
        batch = self._assemble(queries, passage_embeddings)
        q, r = self._states(batch, self._run(batch), queries)
        scores = cosine(q.unsqueeze(1), r).squeeze(1).masked_fill(~batch.slot_mask, float("-inf"))
        return RerankOutput(
            scores=scores,
            mask=batch.slot_mask,
            query_states=q,
            passage_states=r,
            forward_passes=1,
            processed_tokens=list(batch.lengths),
            generated_tokens=[0] * len(queries),
        )

    def embed_passages(self, passages: list[list[str]]) -> list[Tensor]:
        """Passage texts per query -> ``e_i`` per query, with gradient (one encoder call)."""
        flat = [text for texts in passages for text in texts]
        embeddings = self.encoder(flat, "passage")
        return list(torch.split(embeddings, [len(texts) for texts in passages]))

    def score_texts(self, queries: list[str], passages: list[list[str]]) -> RerankOutput:
        """End to end: embed passages with ``E`` (gradient kept, so ranking losses train ``E``), then score."""
        if len(queries) != len(passages):
            raise ResRankError(f"reranker: {len(queries)} queries but {len(passages)} candidate lists")
        for texts in passages:
            if len(texts) > self.cfg.depth:
                raise ResRankError(f"candidate list of {len(texts)} exceeds reranker.depth={self.cfg.depth}")
        return self(queries, self.embed_passages(passages))

    # ---------------------------------------------------------------- autoregressive ablation

    def _step_logits(self, g: Tensor, r: Tensor, emitted: Tensor) -> Tensor:
        """``cos(g_t, r_j)`` for every passage, ``-inf`` where already emitted or padding: ``[B, N]``."""
        return cosine(g.unsqueeze(1), r).squeeze(1).masked_fill(emitted, float("-inf"))

    @torch.no_grad()
    def rank_autoregressive(self, queries: list[str], passage_embeddings: list[Tensor]) -> list[AutoregressiveResult]:
        """Emit each query's ranking one passage per step (dynamic constrained decoding)."""
        passage_embeddings = self._check_lists(queries, passage_embeddings)
        if not queries:
            return []
        batch = self._assemble(queries, passage_embeddings)
        counts = batch.slot_mask.sum(dim=1)
        sizes = counts.tolist()
        n_max = batch.slot_mask.shape[1]
        cache = None
        if self.is_causal:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.reranker.config)
            hidden = self._run(batch, cache=cache, use_cache=True)
        else:
            hidden = self._run(batch)
        g, r = self._states(batch, hidden, queries)
        emitted = ~batch.slot_mask
        step_logits = torch.full((len(queries), n_max, n_max), float("-inf"), device=g.device)
        orders: list[list[int]] = [[] for _ in queries]
        passes = [1] * len(queries)
        processed = list(batch.lengths)
        attention_mask = batch.attention_mask
        rows = batch.rows
        for t in range(n_max):
            logits = self._step_logits(g, r, emitted)
            choice = logits.argmax(dim=-1)
            active = counts > t
            step_logits[:, t] = torch.where(active[:, None], logits, step_logits[:, t])
            emitted = emitted | (F.one_hot(choice, n_max).bool() & active[:, None])
            chosen = choice.tolist()  # the one host sync per step
            for b, n in enumerate(sizes):
                if n > t:
                    orders[b].append(chosen[b])
            more = counts > t + 1
            sub = [b for b, n in enumerate(sizes) if n > t + 1]
            if not sub:
                break
            if self.is_causal:
                # feed P(e_chosen) as one new token; rows that are done get a zero vector and are ignored
                token = batch.projected[rows, choice] * more[:, None]
                token = token.to(batch.inputs_embeds.dtype).unsqueeze(1)
                attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
                position_ids = (batch.prompt_lengths + t).unsqueeze(1)  # as if unpadded
                out = self.reranker(
                    inputs_embeds=token,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=True,
                )
                g = out.last_hidden_state[:, -1].float()
                for b in sub:
                    passes[b] += 1
                    processed[b] += 1
            else:
                # no KV cache: re-run prompt + fed-back passages under the prefix-LM mask (rows still decoding)
                step = self._assemble(
                    [queries[b] for b in sub], [passage_embeddings[b] for b in sub], [orders[b] for b in sub]
                )
                hidden = self._run(step)
                last = torch.tensor(step.lengths, device=hidden.device) - 1
                g = g.clone()
                g[torch.tensor(sub, device=g.device)] = hidden[step.rows, last].float()
                for i, b in enumerate(sub):
                    passes[b] += 1
                    processed[b] += step.lengths[i]
        step_logits = step_logits.cpu()
        results = []
        for b, order in enumerate(orders):
            n = len(order)
            results.append(
                AutoregressiveResult(
                    order=order,
                    scores=[float(n - p) for p in range(n)],
                    forward_passes=passes[b],
                    processed_tokens=processed[b],
                    generated_tokens=n,
                    step_logits=step_logits[b, :n, :n].clone(),
                )
            )
        return results

    def teacher_forced_logits(
        self,
        queries: list[str],
        passage_embeddings: list[Tensor],
        orders: list[list[int]],
        tau: float = 1.0,
    ) -> list[Tensor]:
        """Per query ``[n, n]`` step logits along ``orders`` from ONE reranker pass (for ListMLE).

        Row ``t`` = ``cos(g_t, r_j) / tau`` with ``orders[b][:t]`` masked to -inf, where
        ``g_t`` is the state after feeding the first ``t`` target passages back.
        """
        passage_embeddings = self._check_lists(queries, passage_embeddings)
        if len(orders) != len(queries):
            raise ResRankError(f"teacher forcing: {len(queries)} queries but {len(orders)} orders")
        for b, (order, emb) in enumerate(zip(orders, passage_embeddings, strict=True)):
            if sorted(order) != list(range(emb.shape[0])):
                raise ResRankError(
                    f"teacher forcing: order {b} {list(order)} is not a permutation of range({emb.shape[0]})"
                )
        if not queries:
            return []
        batch = self._assemble(queries, passage_embeddings, [list(order[:-1]) for order in orders])
        hidden = self._run(batch)
        q, r = self._states(batch, hidden, queries)
        rows = batch.rows
        fed = hidden[rows[:, None], batch.appended_index].float()  # g_1 .. g_{n-1}
        g = torch.cat([q.unsqueeze(1), fed], dim=1)  # [B, T, H], T = n_max
        logits = cosine(g, r) / tau  # [B, T, N]
        out = []
        for b, order in enumerate(orders):
            n = len(order)
            emitted = torch.zeros(n, n, dtype=torch.bool, device=logits.device)
            for t in range(1, n):
                emitted[t] = emitted[t - 1]
                emitted[t, order[t - 1]] = True
            out.append(logits[b, :n, :n].masked_fill(emitted, float("-inf")))
        return out
