"""ResRank one-step scoring: hand computation, batching, pass/token accounting, gradients,
projector rules, limits and checkpoints. Tiny random backbones unless stated otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from resrank.config import EncoderConfig, RerankerConfig
from resrank.errors import ResRankError
from resrank.model import ResRankModel, build_projector

QUERIES = ["what is python", "how do snakes and other reptiles regulate their body temperature", "tea"]


def configs(encoder: str = "tiny-bert", reranker: str = "tiny-qwen3", **overrides: object) -> tuple:
    enc = EncoderConfig(
        model=encoder,
        pooling="mean",
        max_length=32,
        query_max_length=16,
        query_prefix="",
        passage_prefix="",
        batch_size=8,
    )
    values: dict = dict(
        model=reranker,
        projector="auto",
        residual=True,
        residual_scale=1.0,
        residual_norm=False,
        scoring="one-step",
        prompt_order="query-first",
        instruction="Rank the passages by relevance to the query.",
        max_query_length=12,
        depth=20,
        batch_size=4,
    )
    values.update(overrides)
    return enc, RerankerConfig(**values)


def build(reranker: str = "tiny-qwen3", seed: int = 0, encoder: str = "tiny-bert", **overrides: object) -> ResRankModel:
    torch.manual_seed(seed)
    return ResRankModel.from_config(*configs(encoder, reranker, **overrides))


def embeddings(counts: list[int], dim: int = 32, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, dim, generator=gen), dim=-1) for n in counts]


def hand_scores(model: ResRankModel, query: str, emb: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The documented layout and equations, computed directly on the backbone for one query."""
    tok = model.tokenizer
    cfg = model.cfg

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    head = [tok.cls_token_id] if not model.is_causal else []
    summary = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    q = ids(query)[: cfg.max_query_length]
    instr = ids(cfg.instruction + "\n")
    if cfg.prompt_order == "query-first":
        before, after = head + instr + ids("Query: ") + q + ids("\nPassages:"), [summary]
    else:
        before, after = head + instr + ids("Passages:"), ids("\nQuery: ") + q + [summary]
    table = model.reranker.get_input_embeddings()
    projected = model.projector(emb)
    x = torch.cat([table(torch.tensor(before)), projected, table(torch.tensor(after))]).unsqueeze(0)
    with torch.no_grad():
        hidden = model.reranker(inputs_embeds=x).last_hidden_state[0]
    n = emb.shape[0]
    h = hidden[len(before) : len(before) + n]
    p = projected.detach()
    if not cfg.residual:
        r = h
    elif cfg.residual_norm:
        r = F.normalize(h, dim=-1) + cfg.residual_scale * F.normalize(p, dim=-1)
    else:
        r = h + cfg.residual_scale * p
    q_state = hidden[-1]
    if cfg.query_residual and cfg.residual:
        with torch.no_grad():
            e_q = model.projector(model.encoder([query], "query"))[0]
        if cfg.residual_norm:
            q_state, e_q = F.normalize(q_state, dim=-1), F.normalize(e_q, dim=-1)
        q_state = q_state + cfg.residual_scale * e_q
    return F.cosine_similarity(q_state.unsqueeze(0), r, dim=-1), x.shape[1]


@pytest.mark.parametrize("reranker", ["tiny-qwen3", "tiny-bert"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"residual": False},
        {"residual_scale": 0.5},
        {"residual_norm": True},
        {"prompt_order": "passages-first"},
        {"projector": "mlp"},
        {"query_residual": True, "residual_scale": 8.0},
        {"query_residual": True, "residual_norm": True},
        {"query_residual": True, "projector": "mlp"},
    ],
)
def test_scores_equal_hand_computation(reranker: str, overrides: dict) -> None:
    model = build(reranker, **overrides)
    embs = embeddings([4])
    with torch.no_grad():
        out = model(QUERIES[:1], embs)
        expected, length = hand_scores(model, QUERIES[0], embs[0])
    torch.testing.assert_close(out.scores[0], expected, atol=1e-5, rtol=0)
    assert out.processed_tokens == [length]
    assert out.generated_tokens == [0]
    assert out.forward_passes == 1
    assert out.mask.tolist() == [[True] * 4]


def test_residual_changes_scores_and_states() -> None:
    embs = embeddings([5])
    with torch.no_grad():
        with_res = build(residual=True)(QUERIES[:1], embs)
        without = build(residual=False)(QUERIES[:1], embs)
    # same weights (same seed): r_i differs exactly by P(e_i) = e_i (identity projector)
    torch.testing.assert_close(with_res.passage_states[0] - without.passage_states[0], embs[0], atol=1e-5, rtol=0)
    assert not torch.allclose(with_res.scores, without.scores)


def test_query_residual_adds_the_encoder_query_vector_to_the_summary_state() -> None:
    embs = embeddings([5])
    model = build(residual_scale=8.0)
    with torch.no_grad():
        plain = model(QUERIES[:2], embs + embeddings([3], seed=2))
        model.cfg = replace(model.cfg, query_residual=True)
        with_query = model(QUERIES[:2], embs + embeddings([3], seed=2))
        e_q = model.encoder(QUERIES[:2], "query")
    torch.testing.assert_close(with_query.query_states - plain.query_states, 8.0 * e_q, atol=1e-4, rtol=0)
    torch.testing.assert_close(with_query.passage_states, plain.passage_states)


@pytest.mark.parametrize("reranker", ["tiny-qwen3", "tiny-bert"])
@pytest.mark.parametrize("prompt_order", ["query-first", "passages-first"])
def test_scores_do_not_depend_on_batch_mates_or_padding(reranker: str, prompt_order: str) -> None:
    model = build(reranker, prompt_order=prompt_order)
    counts = [3, 7, 1]
    embs = embeddings(counts)
    with torch.no_grad():
        batched = model(QUERIES, embs)
        reversed_batch = model(QUERIES[::-1], embs[::-1])
        for b, n in enumerate(counts):
            single = model([QUERIES[b]], [embs[b]])
            torch.testing.assert_close(batched.scores[b, :n], single.scores[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(reversed_batch.scores[2 - b, :n], single.scores[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(batched.query_states[b], single.query_states[0], atol=1e-5, rtol=0)
            assert batched.processed_tokens[b] == single.processed_tokens[0]
    assert batched.scores.shape == (3, 7)
    assert torch.isneginf(batched.scores[0, 3:]).all() and torch.isneginf(batched.scores[2, 1:]).all()
    assert batched.mask.sum(dim=1).tolist() == counts
    assert torch.isfinite(batched.scores[batched.mask]).all()


@pytest.mark.parametrize("reranker", ["tiny-qwen3", "tiny-bert"])
def test_exactly_one_forward_pass_and_token_accounting(reranker: str) -> None:
    model = build(reranker)
    calls: list[int] = []
    handle = model.reranker.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    counts = [3, 7, 0]
    try:
        with torch.no_grad():
            out = model(QUERIES, embeddings(counts))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert out.forward_passes == 1
    assert out.generated_tokens == [0, 0, 0]
    for query, n, processed in zip(QUERIES, counts, out.processed_tokens, strict=True):
        prompt = model.prompt_length(query, 0) - 1  # tokens before the slots and summary
        assert processed == prompt + n + 1
    assert calls[0] == max(out.processed_tokens)


def test_empty_lists_and_empty_batch() -> None:
    model = build()
    with torch.no_grad():
        out = model(QUERIES[:1], [torch.zeros(0, 32)])
        empty = model([], [])
    assert out.scores.shape == (1, 0)
    assert out.processed_tokens == [model.prompt_length(QUERIES[0], 0)]
    assert out.query_states.shape == (1, 32)
    assert empty.forward_passes == 0 and empty.scores.shape == (0, 0) and empty.processed_tokens == []


def test_ranking_gradients_reach_the_encoder() -> None:
    model = build(projector="mlp")
    out = model.score_texts(QUERIES[:2], [["python is a language", "tea is a drink"], ["snakes bask in the sun"]])
    out.scores[out.mask].sum().backward()
    enc_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert enc_grads and sum(float(g.abs().sum()) for g in enc_grads) > 0
    assert all(p.grad is not None for p in model.projector.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.reranker.parameters())


def test_query_residual_sends_ranking_gradients_through_the_query_vector() -> None:
    model = build(query_residual=True)
    with torch.no_grad():
        embs = model.embed_passages([["python is a language", "tea is a drink"]])
    model(QUERIES[:1], embs).scores.sum().backward()
    enc_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert enc_grads and sum(float(g.abs().sum()) for g in enc_grads) > 0


@pytest.mark.parametrize("query_residual", [False, True])
def test_frozen_encoder_gets_no_gradient(query_residual: bool) -> None:
    passages = [["python is a language", "tea is a drink"]]
    model = build(query_residual=query_residual)
    model.encoder.requires_grad_(False)
    model.score_texts(QUERIES[:1], passages).scores.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.reranker.parameters())


def test_passage_embeddings_made_without_grad_give_the_encoder_no_gradient() -> None:
    """Without the query residual the encoder enters only through the passage vectors."""
    passages = [["python is a language", "tea is a drink"]]
    model = build()
    with torch.no_grad():
        embs = model.embed_passages(passages)
    model(QUERIES[:1], embs).scores.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.reranker.parameters())


def test_projector_rules() -> None:
    assert isinstance(build_projector("auto", 32, 32), nn.Identity)
    assert isinstance(build_projector("identity", 32, 32), nn.Identity)
    mlp = build_projector("auto", 32, 48)
    assert isinstance(mlp, nn.Sequential)
    assert [type(m) for m in mlp] == [nn.Linear, nn.GELU, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[2].out_features) == (32, 48, 48)
    linear = build_projector("linear", 32, 32)
    assert isinstance(linear, nn.Linear) and linear.out_features == 32
    assert isinstance(build_projector("mlp", 32, 32), nn.Sequential)
    with pytest.raises(ResRankError, match="'identity' needs equal hidden sizes"):
        build_projector("identity", 32, 48)
    with pytest.raises(ResRankError, match="unknown projector"):
        build_projector("conv", 32, 32)


def test_mismatched_hidden_sizes_get_an_mlp_projector() -> None:
    model = build("tiny-qwen3-h48")
    assert isinstance(model.projector, nn.Sequential)
    with torch.no_grad():
        out = model(QUERIES[:1], embeddings([3]))
    assert out.passage_states.shape == (1, 3, 48)
    with pytest.raises(ResRankError, match="needs equal hidden sizes"):
        build("tiny-qwen3-h48", projector="identity")
    with pytest.raises(ResRankError, match=r"must be \[n, 32\]"):
        model(QUERIES[:1], [torch.zeros(3, 48)])


def test_depth_is_enforced() -> None:
    model = build(depth=4)
    with pytest.raises(ResRankError, match=r"candidate list of 5 exceeds reranker\.depth=4"):
        model(QUERIES[:1], embeddings([5]))
    with pytest.raises(ResRankError, match=r"candidate list of 5 exceeds reranker\.depth=4"):
        model.score_texts(QUERIES[:1], [["p"] * 5])
    with pytest.raises(ResRankError, match="2 queries but 1 candidate lists"):
        model(QUERIES[:2], embeddings([2]))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build(projector="mlp", seed=0)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))  # what the trainer does; fails on shared tensors
    torch.manual_seed(123)  # different random init, then overwritten by the checkpoint
    restored = ResRankModel.from_checkpoint(*configs(projector="mlp"), path)
    embs = embeddings([4, 2])
    with torch.no_grad():
        torch.testing.assert_close(restored(QUERIES[:2], embs).scores, model(QUERIES[:2], embs).scores)
    model.save_checkpoint(tmp_path / "again.safetensors")
    again = ResRankModel.from_checkpoint(*configs(projector="mlp"), tmp_path / "again.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))


def test_checkpoint_mismatch_names_file_and_tensor(tmp_path: Path) -> None:
    path = tmp_path / "small.safetensors"
    build(projector="mlp").save_checkpoint(path)
    with pytest.raises(ResRankError) as err:
        ResRankModel.from_checkpoint(*configs(reranker="tiny-qwen3-h48", projector="mlp"), path)
    message = str(err.value)
    assert str(path) in message
    # the first mismatch in model order: the reranker's embedding table (30522 x 32 vs 30522 x 48)
    assert "tensor 'reranker.embed_tokens.weight' has shape (30522, 32)" in message
    assert "expects (30522, 48)" in message
    with pytest.raises(ResRankError, match="missing tensors"):
        ResRankModel.from_checkpoint(*configs(projector="linear"), path)
    with pytest.raises(ResRankError, match="checkpoint file not found"):
        ResRankModel.from_checkpoint(*configs(), tmp_path / "absent.safetensors")


def test_real_minilm_as_encoder_and_reranker() -> None:
    """all-MiniLM-L6-v2 on both sides (the default CPU profile): identity projector, one pass."""
    enc_cfg, rr_cfg = configs("minilm-l6", "minilm-l6")
    model = ResRankModel.from_config(replace(enc_cfg, max_length=64), rr_cfg)
    assert isinstance(model.projector, nn.Identity)
    assert not model.is_causal
    passages = [
        [
            "Python is a high-level programming language.",
            "The python is a large snake found in Africa and Asia.",
            "Green tea is brewed from unoxidised leaves.",
        ]
    ]
    with torch.no_grad():
        out = model.score_texts(["python programming language"], passages)
        embs = model.embed_passages(passages)
        expected, length = hand_scores(model, "python programming language", embs[0])
    assert out.scores.shape == (1, 3)
    assert torch.isfinite(out.scores).all() and (out.scores.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(out.scores[0], expected, atol=1e-5, rtol=0)
    assert out.processed_tokens == [length]
    assert out.forward_passes == 1
