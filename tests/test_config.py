"""Typed config: schema defaults, variant overrides, and one clear message per bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from resrank.config import load_config, resolve, validate
from resrank.errors import ResRankError

REPO = Path(__file__).resolve().parents[1]
PROFILES = ["config/config.yaml", "config/smoke.yaml", "config/paper.yaml"]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_and_variant_resolves(profile: str) -> None:
    data = yaml.safe_load((REPO / profile).read_text())
    for variant in data["variants"]:
        cfg = resolve(data, variant, source=profile)
        assert cfg.variant == variant
        assert cfg.train.stages, "every variant trains at least one stage"
        assert len(cfg.fingerprint()) == 64


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_dataset_definition_is_a_valid_spec(profile: str) -> None:
    from resrank.data.registry import get_spec

    definitions = (yaml.safe_load((REPO / profile).read_text()).get("datasets") or {}).get("definitions") or {}
    for name in definitions:
        spec = get_spec(name, definitions)
        assert spec.name == name


def test_plan_rejects_a_bad_dataset_definition_before_any_job() -> None:
    from resrank.workflow import make_plan

    data = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    data.setdefault("datasets", {})["definitions"] = {
        "my-lists": {"source": "retrieve_results", "path": "x.json", "purpose": "train",
                     "first_stage": "candidates", "labels": "teacher"}
    }
    with pytest.raises(ResRankError, match=r"datasets\.definitions\.my-lists.*unknown key\(s\) labels"):
        make_plan(data)


def test_paper_profile_layered_over_the_default_keeps_the_papers_readings() -> None:
    """Snakemake merges ``--configfile config/paper.yaml`` over config/config.yaml, so every CPU-only
    choice of the default profile must be undone explicitly in the paper profile."""
    from resrank.config import merge

    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    cfg = resolve(merge(default, paper), "resrank", source="config/config.yaml + config/paper.yaml")
    assert (cfg.reranker.residual_scale, cfg.reranker.query_residual) == (1.0, False)
    assert cfg.train.train_encoder is True
    for stage in cfg.train.stages:
        assert stage.train_encoder in (None, True), f"{stage.name} would freeze the encoder"
        assert not stage.resample
    assert [s.datasets for s in cfg.train.stages] == [("msmarco-train",), ("teacher-lists",)]


def test_schema_fills_defaults() -> None:
    cfg = resolve({"profile": "x", "train": {"stages": {"stage1": {"datasets": ["embedded-train"]},
                                                        "stage2": {"datasets": ["embedded-train"]}}}})
    assert cfg.retrieval.k1 == 0.9 and cfg.retrieval.b == 0.4 and cfg.retrieval.depth == 100
    assert cfg.reranker.residual is True and cfg.reranker.scoring == "one-step"
    assert cfg.train.stages[0].name == "stage1" and cfg.train.stages[0].steps == 100


def test_variant_overrides_are_deep_merged() -> None:
    cfg = load_config(REPO / "config/config.yaml", "no-residual")
    base = load_config(REPO / "config/config.yaml", "resrank")
    assert cfg.reranker.residual is False and base.reranker.residual is True
    assert cfg.reranker.model == base.reranker.model
    assert cfg.fingerprint() != base.fingerprint()
    single = load_config(REPO / "config/config.yaml", "single-stage")
    assert [s.name for s in single.train.stages] == ["stage2"]


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"retrieval": {"k1": -1}}, "retrieval.k1"),
        ({"retrieval": {"b": 1.5}}, "retrieval.b"),
        ({"retrieval": {"depth": "many"}}, "retrieval.depth"),
        ({"reranker": {"projector": "conv"}}, "reranker.projector"),
        ({"encoder": {"pooling": "max"}}, "encoder.pooling"),
        ({"train": {"lambda_retrieval": -0.5}}, "train.lambda_retrieval"),
        ({"unknown_key": 1}, "(top level)"),
    ],
)
def test_bad_values_name_the_key(patch: dict, key: str) -> None:
    data = {"profile": "x", **patch}
    with pytest.raises(ResRankError, match=re.escape(f"config key '{key}'")) as info:
        validate(data)
    assert "config/schema.yaml" in str(info.value)


def test_unknown_variant_lists_known_ones() -> None:
    with pytest.raises(ResRankError, match=r"unknown variant 'nope'.*no-residual"):
        load_config(REPO / "config/config.yaml", "nope")


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    with pytest.raises(ResRankError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(ResRankError, match="malformed YAML"):
        load_config(bad)


def test_data_root_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESRANK_DATA", "/some/where")
    assert load_config(REPO / "config/smoke.yaml").data_root == "/some/where"
    monkeypatch.delenv("RESRANK_DATA")
    assert load_config(REPO / "config/smoke.yaml").data_root is None


def test_stage_order_must_name_defined_stages() -> None:
    stages = {"stage1": {"datasets": ["embedded-train"]}}
    data = {"profile": "x", "train": {"stage_order": ["stage9"], "stages": stages}}
    with pytest.raises(ResRankError, match=r"'train.stage_order' names stage 'stage9'.*stage1"):
        resolve(data)
