"""Encoder: pooling, normalisation, prefixes, length-sorted batching, MiniLM parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resrank.config import EncoderConfig
from resrank.errors import ResRankError
from resrank.model import Encoder, load_backbone, pool

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today after the central bank raised interest rates.",
    "Python",
]


def encoder_cfg(model: str = "minilm-l6", pooling: str = "mean", **overrides: object) -> EncoderConfig:
    values: dict = dict(
        model=model,
        pooling=pooling,
        max_length=256,
        query_max_length=64,
        query_prefix="",
        passage_prefix="",
        batch_size=64,
    )
    values.update(overrides)
    return EncoderConfig(**values)


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder.from_config(encoder_cfg())


def test_pool_handles_left_and_right_padding() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(1, 3, 4)
    right = torch.cat([hidden, torch.randn(1, 2, 4)], dim=1)
    right_mask = torch.tensor([[1, 1, 1, 0, 0]])
    left = torch.cat([torch.randn(1, 2, 4), hidden], dim=1)
    left_mask = torch.tensor([[0, 0, 1, 1, 1]])
    for pooling, expected in (("last", hidden[0, 2]), ("cls", hidden[0, 0]), ("mean", hidden[0].mean(0))):
        torch.testing.assert_close(pool(right, right_mask, pooling)[0], expected)  # type: ignore[arg-type]
        torch.testing.assert_close(pool(left, left_mask, pooling)[0], expected)  # type: ignore[arg-type]
    with pytest.raises(ResRankError, match="unknown pooling"):
        pool(hidden, torch.ones(1, 3), "max")  # type: ignore[arg-type]


def test_minilm_matches_manual_mean_pooling(minilm: Encoder) -> None:
    """The all-MiniLM-L6-v2 recipe: AutoModel, mean over the attention mask, L2 normalise."""
    model, tokenizer = load_backbone("minilm-l6")
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    manual = F.normalize((tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9), p=2, dim=1)
    ours = minilm.encode(SENTENCES, "passage", batch_size=3)
    torch.testing.assert_close(ours, manual, atol=1e-5, rtol=0)
    assert ours.shape == (4, 384)
    # semantic sanity: paraphrase much closer than an unrelated sentence
    sims = ours @ ours.T
    assert sims[0, 1] > 0.6
    assert sims[0, 2] < 0.2
    assert sims[0, 1] - sims[0, 2] > 0.5


def test_minilm_matches_sentence_transformers(minilm: Encoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    from resrank.model.loading import minilm_path

    reference = st.SentenceTransformer(minilm_path(), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(minilm.encode(SENTENCES, "query"), reference.float(), atol=1e-5, rtol=0)


def test_encode_restores_order_and_handles_empty(minilm: Encoder) -> None:
    batched = minilm.encode(SENTENCES, "passage", batch_size=2)
    singles = torch.cat([minilm.encode([s], "passage") for s in SENTENCES])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    assert batched.dtype == torch.float32 and batched.device.type == "cpu"
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(4))
    empty = minilm.encode([], "query")
    assert empty.shape == (0, 384)
    assert minilm([], "passage").shape == (0, 384)


def test_encode_is_eval_mode_and_restores_training(minilm: Encoder) -> None:
    minilm.train()
    try:
        first = minilm.encode(SENTENCES[:2], "passage")
        second = minilm.encode(SENTENCES[:2], "passage")
        assert minilm.training and minilm.model.training
    finally:
        minilm.eval()
    torch.testing.assert_close(first, second, atol=0, rtol=0)  # dropout was off


def test_forward_is_differentiable_and_normalised() -> None:
    torch.manual_seed(0)
    encoder = Encoder.from_config(encoder_cfg("tiny-bert"))
    out = encoder(SENTENCES, "passage")
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    out[:, 0].sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_prefixes_and_max_lengths() -> None:
    torch.manual_seed(0)
    prefix = "Instruct: Given a web search query, retrieve relevant passages\nQuery: "
    encoder = Encoder.from_config(encoder_cfg("tiny-bert", query_prefix=prefix, max_length=12, query_max_length=40))
    plain = Encoder(encoder.model, encoder.tokenizer, pooling="mean", max_length=40, query_max_length=40)
    expected = plain.encode([prefix + "what is python"], "passage")
    torch.testing.assert_close(encoder.encode(["what is python"], "query"), expected)
    long_text = " ".join(["word"] * 100)
    assert len(encoder.tokenize([long_text], "passage")[0]) == 12
    assert len(encoder.tokenize([long_text], "query")[0]) == 40
    assert encoder.tokenize(["python"], "query")[0] != encoder.tokenize(["python"], "passage")[0]
    with pytest.raises(ResRankError, match="kind must be"):
        encoder.tokenize(["x"], "document")  # type: ignore[arg-type]


def test_last_pooling_is_padding_side_invariant() -> None:
    torch.manual_seed(0)
    encoder = Encoder.from_config(encoder_cfg("tiny-qwen3", pooling="last"))
    encoder.tokenizer.padding_side = "right"
    right = encoder.encode(SENTENCES, "passage", batch_size=4)
    encoder.tokenizer.padding_side = "left"
    left = encoder.encode(SENTENCES, "passage", batch_size=4)
    encoder.tokenizer.padding_side = "right"
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)
    # last pooling reads the final token: the embedding depends on it, so it is the [SEP] state
    ids = encoder.tokenize(["python"], "passage")[0]
    assert ids[-1] == encoder.tokenizer.sep_token_id


def test_last_pooling_appends_missing_eos() -> None:
    model, tokenizer = load_backbone("tiny-qwen3")
    tokenizer.eos_token = "[unused1]"  # an EOS the tokenizer does not append by itself
    encoder = Encoder(model, tokenizer, pooling="last", max_length=8)
    rows = encoder.tokenize(["python", " ".join(["word"] * 50)], "passage")
    assert all(row[-1] == tokenizer.eos_token_id for row in rows)
    assert len(rows[1]) == 8
    mean_encoder = Encoder(model, tokenizer, pooling="mean", max_length=8)
    assert mean_encoder.tokenize(["python"], "passage")[0][-1] != tokenizer.eos_token_id
