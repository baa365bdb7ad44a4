"""Glue between the DAG's prepared files and the trainer: one stage of one variant."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from resrank.config import ResRankConfig, StageConfig
from resrank.data.prepared import read_prepared
from resrank.errors import ResRankError
from resrank.io import read_trec_run
from resrank.train.lists import TrainingList, build_lists
from resrank.train.trainer import train_stage

log = logging.getLogger(__name__)


def load_training_lists(cfg: ResRankConfig, stage_name: str, datasets: list[str], data_dir: Path,
                        runs_dir: Path) -> dict[str, list[TrainingList]]:
    stage = stage_by_name(cfg, stage_name)
    lists: dict[str, list[TrainingList]] = {}
    for name in datasets:
        dataset = read_prepared(data_dir / name)
        run_path = runs_dir / name / "bm25.trec"
        run = read_trec_run(run_path) if run_path.exists() else None
        teacher = data_dir / name / "candidates.jsonl" if stage.labels == "teacher" else None
        per_query = stage.upsample.get(name, 1) if stage.draws_upsampled_lists else 1
        lists[name] = build_lists(dataset, run, stage.list_size, stage.hard_negatives, stage.labels, cfg.seed,
                                  teacher_path=teacher, lists_per_query=per_query)
        log.info("stage %s: %d training lists from %s", stage_name, len(lists[name]), name)
    if not any(lists.values()):
        raise ResRankError(f"stage {stage_name}: no training list could be built from {', '.join(datasets)} "
                           "(need queries with a judged-relevant passage that has text)")
    return lists


def stage_by_name(cfg: ResRankConfig, stage_name: str) -> StageConfig:
    for stage in cfg.train.stages:
        if stage.name == stage_name:
            return stage
    names = ", ".join(s.name for s in cfg.train.stages)
    raise ResRankError(f"variant '{cfg.variant}' has no stage '{stage_name}' (its train.stage_order: {names})")


def train_from_prepared(cfg: ResRankConfig, stage_name: str, datasets: list[str], data_dir: Path, runs_dir: Path,
                        out: Path, init: Path | None) -> Path:
    """Train ``stage_name`` on the prepared ``datasets`` (default: the stage's) into ``out``."""
    stage = stage_by_name(cfg, stage_name)
    datasets = datasets or list(stage.datasets)
    lists = load_training_lists(cfg, stage_name, datasets, data_dir, runs_dir)
    cache = Path(cfg.results_dir) / cfg.profile / "cache" / "frozen-embeddings"
    return train_stage(cfg, replace(stage, datasets=tuple(datasets)), lists, out, init, embedding_cache=cache)
