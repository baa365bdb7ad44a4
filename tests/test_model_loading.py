"""Model name resolution and backbone loading (offline: no hub access in tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resrank.errors import ResRankError
from resrank.model import loading
from resrank.model.loading import known_names, load_backbone, resolve_model_path, tiny_config


def test_short_names_resolve_to_hub_ids_and_package_folder() -> None:
    assert resolve_model_path("qwen3-embedding-4b") == "Qwen/Qwen3-Embedding-4B"
    assert resolve_model_path("qwen3-4b") == "Qwen/Qwen3-4B"
    assert resolve_model_path("Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert resolve_model_path("qwen3-embedding-0.6b") == "Qwen/Qwen3-Embedding-0.6B"
    folder = Path(resolve_model_path("minilm-l6"))
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    assert resolve_model_path("tiny-bert") == "tiny-bert"
    assert resolve_model_path("tiny-qwen3-h48") == "tiny-qwen3-h48"


def test_local_directory_and_hub_id_pass_through(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"


def test_unknown_name_lists_short_names() -> None:
    with pytest.raises(ResRankError) as err:
        resolve_model_path("minilm")
    message = str(err.value)
    assert "unknown model 'minilm'" in message
    for name in known_names():
        assert name in message


def test_missing_local_path_is_reported() -> None:
    with pytest.raises(ResRankError, match="is not a directory"):
        resolve_model_path("./no/such/model")


def test_uncached_hub_model_offline_gives_actionable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ResRankError) as err:
        load_backbone("resrank-test/definitely-not-cached")
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message
    assert "huggingface-cli download resrank-test/definitely-not-cached" in message
    assert "HF_HOME" in message and "local path" in message


def test_unreachable_hub_uses_cache_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ResRankError, match="the hub cannot be reached"):
        load_backbone("resrank-test/definitely-not-cached")


def test_minilm_loads_real_weights_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_backbone("minilm-l6")
    assert type(model).__name__ == "BertModel"
    assert model.config.hidden_size == 384
    assert model.config.num_hidden_layers == 6
    assert model.get_input_embeddings().weight.shape == (30522, 384)
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert not model.training
    # uncased WordPiece: case does not change the ids; [CLS]/[SEP] framing
    ids = tokenizer("Hello World")["input_ids"]
    assert ids == tokenizer("hello world")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id == 101 and ids[-1] == tokenizer.sep_token_id == 102
    # pretrained, not random: the LayerNorm of the embeddings is far from its (1, 0) init
    assert not torch.allclose(model.embeddings.LayerNorm.weight, torch.ones(384))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-qwen3"])
def test_tiny_models_are_deterministic_under_manual_seed(name: str) -> None:
    torch.manual_seed(3)
    first, tokenizer = load_backbone(name)
    torch.manual_seed(3)
    second, _ = load_backbone(name)
    torch.manual_seed(4)
    third, _ = load_backbone(name)
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert first.config.hidden_size == 32
    assert first.config.num_hidden_layers == 2
    assert first.get_input_embeddings().weight.shape[0] == tokenizer.vocab_size


def test_tiny_hidden_size_suffix_and_configs() -> None:
    model, _ = load_backbone("tiny-qwen3-h48")
    assert model.config.hidden_size == 48
    assert type(model).__name__ == "Qwen3Model"
    assert tiny_config("bert").model_type == "bert"
    assert tiny_config("qwen3", 16).head_dim == 8
    with pytest.raises(ResRankError, match="unknown tiny model kind"):
        tiny_config("gpt2")  # type: ignore[arg-type]
