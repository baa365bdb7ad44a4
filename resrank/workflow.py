"""What the Snakemake DAG should contain for a config: datasets reachable, systems per dataset.

The Snakefile calls these at parse time; they only look at the config and the dataset
registry (cheap availability checks), never at results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resrank.config import resolve, stage_recipe, validate
from resrank.data.registry import DatasetSpec, get_spec, is_available, resolve_paths

BASELINE_SYSTEMS = ("encoder-untrained", "encoder-only")
"""Cosine reranking of the candidates with the untrained encoder and with the jointly trained one."""

MAIN_VARIANT = "resrank"


@dataclass(frozen=True)
class Plan:
    out: str
    config_path: str
    variants: tuple[str, ...]
    eval_available: tuple[str, ...]
    eval_unavailable: dict[str, str]
    rerankable: tuple[str, ...]
    with_corpus: tuple[str, ...]
    pools: tuple[str, ...]
    train_datasets: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    stage_order: dict[str, tuple[str, ...]] = field(default_factory=dict)
    train_unavailable: dict[str, str] = field(default_factory=dict)
    stage_owner: dict[str, dict[str, str]] = field(default_factory=dict)
    stage_recipe: dict[str, dict[str, str]] = field(default_factory=dict)
    ablation_datasets: tuple[str, ...] = ()
    position_datasets: tuple[str, ...] = ()

    def variants_on(self, dataset: str) -> list[str]:
        """The trained variants reranking one dataset: all of them on the ablation datasets, else the main one."""
        if dataset not in self.rerankable:
            return []
        if dataset in self.ablation_datasets:
            return list(self.variants)
        return [v for v in self.variants if v == MAIN_VARIANT]

    def systems(self, dataset: str) -> list[str]:
        """Every run the DAG produces for one evaluation dataset."""
        systems = ["bm25"]
        if dataset in self.rerankable:
            systems += [*BASELINE_SYSTEMS, *self.variants_on(dataset)]
        if dataset in self.with_corpus:
            for pool in self.pools:
                if pool == "bm25":
                    continue
                systems += [pool, f"{MAIN_VARIANT}@{pool}"]
        return systems

    def all_datasets(self) -> list[str]:
        """Evaluation and training datasets whose data must be prepared."""
        names = list(self.eval_available)
        for stages in self.train_datasets.values():
            for datasets in stages.values():
                names += [d for d in datasets if d not in names]
        return names


def make_plan(config: dict[str, Any]) -> Plan:
    config = validate(config)
    out = str(Path(config["results_dir"]) / config["profile"])
    root = config.get("data_root")
    extra = config["datasets"]["definitions"]
    strict = not config["datasets"]["skip_unavailable"]
    for name in extra:
        get_spec(name, extra)  # a bad key in datasets.definitions fails here, before any job runs

    def reachable(name: str) -> tuple[bool, str]:
        return (True, "") if strict else is_available(name, root, extra)

    available: list[str] = []
    unavailable: dict[str, str] = {}
    for name in config["datasets"]["eval"]:
        ok, reason = reachable(name)
        if ok:
            available.append(name)
        else:
            unavailable[name] = reason
    rerankable = tuple(n for n in available if has_texts(get_spec(n, extra), None if strict else root, strict))
    with_corpus = tuple(n for n in available if get_spec(n, extra).first_stage == "bm25")

    variants = tuple(config["variants"])
    train_datasets: dict[str, dict[str, tuple[str, ...]]] = {}
    stage_order: dict[str, tuple[str, ...]] = {}
    train_unavailable: dict[str, str] = {}
    stage_owner: dict[str, dict[str, str]] = {}
    recipes: dict[str, dict[str, str]] = {}
    owners: dict[str, str] = {}  # recipe -> first variant (in config order) with it
    for variant in variants:
        resolved = resolve(config, variant)
        stage_order[variant] = tuple(s.name for s in resolved.train.stages)
        train_datasets[variant] = {}
        stage_owner[variant] = {}
        recipes[variant] = {}
        for stage in resolved.train.stages:
            for name in stage.upsample:
                get_spec(name, extra)  # a misspelt dataset name fails here, listing the known ones
            recipe = json.dumps(stage_recipe(resolved, stage.name), sort_keys=True, default=str)
            recipes[variant][stage.name] = recipe
            stage_owner[variant][stage.name] = owners.setdefault(f"{stage.name}|{recipe}", variant)
            usable = []
            for name in stage.datasets:
                ok, reason = reachable(name)
                if ok:
                    usable.append(name)
                else:
                    train_unavailable[name] = reason
            train_datasets[variant][stage.name] = tuple(usable)
    chosen = config["ablations"]["datasets"]
    ablation_datasets = tuple(d for d in rerankable if chosen is None or d in chosen)
    chosen = config["report"]["position_datasets"]
    position_datasets = tuple(d for d in rerankable if chosen is None or d in chosen)
    return Plan(
        out=out,
        config_path=str(Path(out) / "config.yaml"),
        variants=variants,
        eval_available=tuple(available),
        eval_unavailable=unavailable,
        rerankable=rerankable,
        with_corpus=with_corpus,
        pools=tuple(config["pools"]),
        train_datasets=train_datasets,
        stage_order=stage_order,
        train_unavailable=train_unavailable,
        stage_owner=stage_owner,
        stage_recipe=recipes,
        ablation_datasets=ablation_datasets,
        position_datasets=position_datasets,
    )


def has_texts(spec: DatasetSpec, data_root: str | None, assume_present: bool = False) -> bool:
    """Whether the candidates come with passage texts (reranking needs them)."""
    if spec.first_stage in ("bm25", "candidates"):
        return True
    if assume_present:
        return bool(spec.corpus)
    paths = resolve_paths(spec, data_root)
    return "corpus" in paths and paths["corpus"].exists()


def write_if_changed(path: str | Path, config: dict[str, Any]) -> None:
    """Write the merged config for the CLI; untouched when equal so mtimes stay stable."""
    path = Path(path)
    text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    from resrank.io import atomic_write

    with atomic_write(path) as handle:
        handle.write(text)
