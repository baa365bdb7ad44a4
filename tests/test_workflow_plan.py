"""The DAG plan: which systems run on which dataset, from the config alone."""

from __future__ import annotations

from typing import Any

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
