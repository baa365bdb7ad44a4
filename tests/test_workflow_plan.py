"""The DAG plan: which systems run on which dataset, from the config alone."""

from __future__ import annotations

from typing import Any

import pytest

from resrank.errors import ResRankError
from resrank.workflow import BASELINE_SYSTEMS, make_plan

VARIANTS = {"resrank": {}, "no-residual": {"reranker": {"residual": False}}, "autoregressive": {}}


def _config(**extra: Any) -> dict[str, Any]:
    train = {"stage_order": ["stage1"], "stages": {"stage1": {"datasets": ["embedded-train"]}}}
    return {"profile": "plan-test", "datasets": {"eval": ["embedded"]}, "train": train, "variants": VARIANTS, **extra}


def test_every_variant_runs_everywhere_by_default() -> None:
    plan = make_plan(_config())
    assert plan.ablation_datasets == ("embedded",)
    assert plan.systems("embedded") == ["bm25", *BASELINE_SYSTEMS, "resrank", "no-residual", "autoregressive"]
    assert plan.position_datasets == ("embedded",)


def test_ablation_datasets_restrict_the_ablation_variants_only() -> None:
    plan = make_plan(_config(ablations={"datasets": []}, report={"position_datasets": []}))
    assert plan.ablation_datasets == ()
    assert plan.variants_on("embedded") == ["resrank"]
    assert plan.systems("embedded") == ["bm25", *BASELINE_SYSTEMS, "resrank"]
    assert plan.position_datasets == ()


def test_unknown_or_unrerankable_datasets_get_no_variants() -> None:
    plan = make_plan(_config())
    assert plan.variants_on("dl19") == []


def _sharing_config(stage1_encoder: bool | None) -> dict[str, Any]:
    stage = {"datasets": ["embedded-train"], "steps": 2}
    stages = {"stage1": {**stage, "train_encoder": stage1_encoder}, "stage2": stage}
    variants = {
        "resrank": {},
        "separate-training": {"train": {"mode": "separate"}},
        "no-retrieval-loss": {"train": {"lambda_retrieval": 0.0}},
        "no-residual": {"reranker": {"residual": False}},
        "single-stage": {"train": {"stage_order": ["stage2"]}},
    }
    return {"profile": "plan-test", "datasets": {"eval": ["embedded"]},
            "train": {"stage_order": ["stage1", "stage2"], "stages": stages}, "variants": variants}


def test_a_frozen_encoder_stage_is_shared_by_variants_that_differ_only_in_encoder_training() -> None:
    owner = make_plan(_sharing_config(stage1_encoder=False)).stage_owner
    assert owner["separate-training"]["stage1"] == owner["no-retrieval-loss"]["stage1"] == "resrank"
    assert owner["no-residual"]["stage1"] == "no-residual"  # another model: its own stage
    # stage 2 trains the encoder, where joint/separate/lambda matter: nobody shares it
    assert {v: o["stage2"] for v, o in owner.items()} == {v: v for v in owner}


def test_stages_that_train_the_encoder_are_not_shared() -> None:
    owner = make_plan(_sharing_config(stage1_encoder=None)).stage_owner
    assert all(o[s] == v for v, o in owner.items() for s in o)


def test_a_misspelt_upsample_dataset_is_an_error_naming_it() -> None:
    config = _sharing_config(stage1_encoder=False)
    config["train"]["stages"]["stage1"]["upsample"] = {"dl-21": 5}
    with pytest.raises(ResRankError, match="unknown dataset 'dl-21'"):
        make_plan(config)
