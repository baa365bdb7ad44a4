"""Autoregressive ablation: constrained decoding, KV-cache token accounting, and
teacher forcing equal to step-by-step decoding (causal Qwen3 and prefix-LM BERT)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resrank.config import EncoderConfig, RerankerConfig
from resrank.errors import ResRankError
from resrank.model import ResRankModel

QUERIES = ["what is python", "how do snakes regulate their temperature", "tea", "a b c d e f g"]
LENGTHS = [1, 2, 5, 13]


def build(reranker: str, seed: int = 0, **overrides: object) -> ResRankModel:
    enc = EncoderConfig(
        model="tiny-bert",
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
        scoring="autoregressive",
        prompt_order="query-first",
        instruction="Rank the passages by relevance to the query.",
        max_query_length=12,
        depth=20,
        batch_size=4,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return ResRankModel.from_config(enc, RerankerConfig(**values))


def embeddings(counts: list[int], seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, 32, generator=gen), dim=-1) for n in counts]


@pytest.fixture(scope="module", params=["tiny-qwen3", "tiny-bert"])
def model(request: pytest.FixtureRequest) -> ResRankModel:
    return build(request.param)


def test_full_permutations_scores_and_counts(model: ResRankModel) -> None:
    embs = embeddings(LENGTHS)
    results = model.rank_autoregressive(QUERIES, embs)
    for query, n, res in zip(QUERIES, LENGTHS, results, strict=True):
        assert sorted(res.order) == list(range(n))
        assert res.generated_tokens == n
        assert res.forward_passes == n
        assert all(a > b for a, b in zip(res.scores, res.scores[1:], strict=False))
        assert res.scores == [float(n - p) for p in range(n)]
        assert res.passage_scores[res.order[0]] == max(res.scores)
        prompt = model.prompt_length(query, n)  # prompt + n slots + summary
        if model.is_causal:
            assert res.processed_tokens == prompt + (n - 1)  # then one new token per step
        else:
            assert res.processed_tokens == sum(prompt + t for t in range(n))  # full re-run per step
        assert res.step_logits.shape == (n, n)


def test_step_logits_mask_emitted_and_choose_argmax(model: ResRankModel) -> None:
    (res,) = model.rank_autoregressive(QUERIES[:1], embeddings([5]))
    for t, chosen in enumerate(res.order):
        row = res.step_logits[t]
        emitted = set(res.order[:t])
        assert all(torch.isneginf(row[j]) for j in emitted)
        assert all(torch.isfinite(row[j]) for j in range(5) if j not in emitted)
        assert int(row.argmax()) == chosen


def test_each_step_after_the_first_processes_one_new_token() -> None:
    model = build("tiny-qwen3")
    lengths: list[int] = []
    handle = model.reranker.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        results = model.rank_autoregressive(QUERIES, embeddings(LENGTHS))
    finally:
        handle.remove()
    first_pass = max(model.prompt_length(q, n) for q, n in zip(QUERIES, LENGTHS, strict=True))
    assert lengths[0] == first_pass
    assert lengths[1:] == [1] * (max(LENGTHS) - 1)
    assert [r.generated_tokens for r in results] == LENGTHS


def test_batched_decoding_equals_single_queries(model: ResRankModel) -> None:
    embs = embeddings(LENGTHS)
    batched = model.rank_autoregressive(QUERIES, embs)
    for b in range(len(QUERIES)):
        (single,) = model.rank_autoregressive([QUERIES[b]], [embs[b]])
        assert single.order == batched[b].order
        assert single.processed_tokens == batched[b].processed_tokens
        finite = torch.isfinite(single.step_logits)
        assert torch.equal(finite, torch.isfinite(batched[b].step_logits))
        torch.testing.assert_close(single.step_logits[finite], batched[b].step_logits[finite], atol=1e-5, rtol=0)


def test_teacher_forcing_equals_step_by_step_decoding(model: ResRankModel) -> None:
    embs = embeddings(LENGTHS)
    results = model.rank_autoregressive(QUERIES, embs)
    calls: list[int] = []
    handle = model.reranker.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            forced = model.teacher_forced_logits(QUERIES, embs, [r.order for r in results])
    finally:
        handle.remove()
    assert len(calls) == 1
    for res, logits, n in zip(results, forced, LENGTHS, strict=True):
        assert logits.shape == (n, n)
        assert torch.equal(torch.isneginf(logits), torch.isneginf(res.step_logits))
        finite = torch.isfinite(logits)
        torch.testing.assert_close(logits[finite], res.step_logits[finite], atol=1e-4, rtol=0)


def test_teacher_forcing_first_row_is_the_one_step_score(model: ResRankModel) -> None:
    """Appended tokens never leak into the prompt (causal / prefix-LM mask)."""
    embs = embeddings([6])
    order = [[3, 1, 5, 0, 2, 4]]
    with torch.no_grad():
        forced = model.teacher_forced_logits(QUERIES[:1], embs, order, tau=0.5)
        one_step = model(QUERIES[:1], embs).scores[0]
    torch.testing.assert_close(forced[0][0], one_step / 0.5, atol=1e-5, rtol=0)
    assert torch.isneginf(forced[0][2, [3, 1]]).all()


def test_teacher_forcing_trains_encoder_and_validates_orders() -> None:
    model = build("tiny-qwen3")
    passages = [["python is a language", "tea is a drink", "snakes bask"]]
    embs = model.embed_passages(passages)
    (logits,) = model.teacher_forced_logits(QUERIES[:1], embs, [[2, 0, 1]])
    target = torch.tensor([2, 0, 1])
    loss = -torch.log_softmax(logits, dim=-1)[torch.arange(3), target].sum()
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.encoder.parameters())
    with pytest.raises(ResRankError, match="not a permutation"):
        model.teacher_forced_logits(QUERIES[:1], embs, [[0, 0, 1]])


def test_empty_list_and_depth(model: ResRankModel) -> None:
    results = model.rank_autoregressive(QUERIES[:2], [torch.zeros(0, 32), embeddings([3])[0]])
    assert results[0].order == [] and results[0].generated_tokens == 0
    assert sorted(results[1].order) == [0, 1, 2]
    assert model.rank_autoregressive([], []) == []
    with pytest.raises(ResRankError, match=r"exceeds reranker\.depth=20"):
        model.rank_autoregressive(QUERIES[:1], embeddings([21]))
