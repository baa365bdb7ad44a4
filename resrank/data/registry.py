"""Short dataset names -> source specs (``resources/datasets.yaml``) -> loaded :class:`Dataset`.

The registry is the one place that knows where each dataset of the paper lives and how to
provide it when it is missing; the config's ``datasets.definitions`` adds entries or
overrides keys of existing ones.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from resrank.data import sources
from resrank.data.types import Dataset
from resrank.errors import DataUnavailableError, ResRankError
from resrank.io import read_trec_qrels

REGISTRY_PATH = Path(__file__).resolve().parents[1] / "resources" / "datasets.yaml"

Source = Literal["beir", "trec", "retrieve_results", "ir_datasets", "embedded"]
SOURCES = ("beir", "trec", "retrieve_results", "ir_datasets", "embedded")
FIRST_STAGES = ("bm25", "candidates", "run")
PURPOSES = ("eval", "train")
PATH_KEYS = ("path", "topics", "qrels", "run", "corpus", "candidates")
"""Spec keys holding file paths: relative ones resolve against the data root."""


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry, validated: where the data lives and how to provide it."""

    name: str
    source: Source
    first_stage: Literal["bm25", "candidates", "run"]
    purpose: Literal["eval", "train"]
    description: str
    how_to_provide: str
    path: str | None = None
    split: str | None = None
    irds_id: str | None = None
    topics: str | None = None
    qrels: str | None = None
    run: str | None = None
    corpus: str | None = None
    corpus_optional: bool = False
    candidates: str | None = None
    judged_only: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Only the keys that are set, for manifests and messages."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def needs_data_root(self) -> bool:
        return any(_is_relative(getattr(self, key)) for key in PATH_KEYS)


def _is_relative(value: str | None) -> bool:
    return bool(value) and not Path(value).expanduser().is_absolute()  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def _builtin() -> dict[str, dict[str, Any]]:
    with open(REGISTRY_PATH, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ResRankError(f"{REGISTRY_PATH}: top level must map dataset names to specs")
    return data


def _definitions(extra_definitions: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Built-in entries with the config's definitions merged in (per entry, key by key)."""
    merged = {name: dict(entry or {}) for name, entry in _builtin().items()}
    for name, entry in (extra_definitions or {}).items():
        if not isinstance(entry, dict):
            raise ResRankError(f"config key 'datasets.definitions.{name}': must be a mapping of spec keys")
        merged[name] = {**merged.get(name, {}), **entry}
    return merged


def dataset_names(extra_definitions: dict[str, Any] | None = None) -> list[str]:
    """All known short names (built-in plus the config's definitions), sorted."""
    return sorted(_definitions(extra_definitions))


def get_spec(name: str, extra_definitions: dict[str, Any] | None = None) -> DatasetSpec:
    """The validated spec of ``name``; an unknown name lists the known ones."""
    definitions = _definitions(extra_definitions)
    if name not in definitions:
        raise ResRankError(
            f"unknown dataset '{name}'; known datasets: {', '.join(sorted(definitions))} "
            "(add new ones under datasets.definitions in the config)"
        )
    return _validate(name, definitions[name], from_config=bool(extra_definitions and name in extra_definitions))


def _validate(name: str, entry: dict[str, Any], from_config: bool) -> DatasetSpec:
    where = f"config key 'datasets.definitions.{name}'" if from_config else f"{REGISTRY_PATH} entry '{name}'"
    allowed = {f.name for f in fields(DatasetSpec)} - {"name"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ResRankError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    values = {"description": "", "how_to_provide": "", **entry}
    for key, choices in (("source", SOURCES), ("first_stage", FIRST_STAGES), ("purpose", PURPOSES)):
        if values.get(key) not in choices:
            raise ResRankError(f"{where}: '{key}' must be one of {', '.join(choices)}, got {values.get(key)!r}")
    for key in (*PATH_KEYS, "split", "irds_id", "description", "how_to_provide"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise ResRankError(f"{where}: '{key}' must be a string, got {type(values[key]).__name__}")
    for key in ("corpus_optional", "judged_only"):
        if key in values and not isinstance(values[key], bool):
            raise ResRankError(f"{where}: '{key}' must be true or false")
    spec = DatasetSpec(name=name, **values)

    def need(*keys: str) -> None:
        for key in keys:
            if not getattr(spec, key):
                raise ResRankError(f"{where}: source '{spec.source}' needs the key '{key}'")

    stage = spec.first_stage
    if spec.source == "beir":
        need("path", "split")
    elif spec.source == "trec":
        need("topics", "qrels")
        if stage == "run":
            need("run")
        elif stage == "bm25" and (not spec.corpus or spec.corpus_optional):
            raise ResRankError(f"{where}: first_stage bm25 on a trec source needs a (non-optional) 'corpus'")
    elif spec.source == "retrieve_results":
        need("path")
        if not spec.qrels and spec.judged_only:
            raise ResRankError(
                f"{where}: source 'retrieve_results' needs the key 'qrels', or judged_only: false for lists "
                "without judgements (teacher permutations)"
            )
    elif spec.source == "ir_datasets":
        need("irds_id")
    elif spec.source == "embedded" and spec.split not in ("train", "test"):
        raise ResRankError(f"{where}: source 'embedded' needs 'split' train or test, got {spec.split!r}")
    expected_stage = {
        "retrieve_results": "candidates",
        "trec": "run" if spec.run else "bm25",
        "embedded": "bm25",
    }.get(spec.source, "candidates" if spec.candidates else "bm25")
    if stage != expected_stage:
        raise ResRankError(
            f"{where}: first_stage '{stage}' does not fit this spec (expected '{expected_stage}': "
            "candidates needs a retrieve_results file, run needs a trec run, bm25 needs a corpus)"
        )
    if spec.candidates and spec.source not in ("beir", "ir_datasets"):
        raise ResRankError(f"{where}: 'candidates' is only used with source beir or ir_datasets")
    return spec


def resolve_data_root(data_root: str | Path | None) -> Path | None:
    """The explicit root, else $RESRANK_DATA, else None."""
    value = data_root if data_root not in (None, "") else os.environ.get("RESRANK_DATA") or None
    return Path(value).expanduser() if value is not None else None


def resolve_paths(spec: DatasetSpec, data_root: str | Path | None) -> dict[str, Path]:
    """Absolute paths of the spec's path keys; relative ones need the data root."""
    root = resolve_data_root(data_root)
    if spec.needs_data_root():
        if root is None:
            raise DataUnavailableError(
                f"dataset '{spec.name}' needs the data root: set RESRANK_DATA or data_root in the config"
            )
        if not root.is_dir():
            raise DataUnavailableError(
                f"dataset '{spec.name}': data root {root} is not a folder; set RESRANK_DATA or data_root "
                "in the config to the folder holding the datasets"
            )
    paths: dict[str, Path] = {}
    for key in PATH_KEYS:
        value = getattr(spec, key)
        if value:
            path = Path(value).expanduser()
            paths[key] = path if path.is_absolute() else root / path  # type: ignore[operator]
    return paths


def _missing(spec: DatasetSpec, paths: dict[str, Path]) -> list[str]:
    """Required paths that do not exist (an optional corpus is not required)."""
    optional = {"corpus"} if spec.corpus_optional else set()
    return [f"{key} {path}" for key, path in paths.items() if key not in optional and not path.exists()]


def _unavailable(spec: DatasetSpec, what: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"dataset '{spec.name}' is unavailable: {what}. How to provide it: {spec.how_to_provide}"
    )


def is_available(
    name: str, data_root: str | Path | None = None, extra_definitions: dict[str, Any] | None = None
) -> tuple[bool, str]:
    """Cheap check (files exist, package importable) without loading; returns (ok, reason).

    For ir_datasets ids availability is only known on load (downloads) unless offline mode is
    on, in which case the cache folder of the id must exist.
    """
    spec = get_spec(name, extra_definitions)
    try:
        paths = resolve_paths(spec, data_root)
    except DataUnavailableError as err:
        return False, str(err)
    missing = _missing(spec, paths)
    if missing:
        return False, str(_unavailable(spec, "missing " + "; ".join(missing)))
    if spec.source == "embedded":
        if importlib.util.find_spec("resrank.data.embedded") is None:
            return False, "the embedded collection module resrank.data.embedded is not installed"
        return True, "built from the standard library on load"
    if spec.source == "ir_datasets" and not (spec.candidates and spec.qrels):
        return _irds_available(spec)
    present = [str(p) for p in paths.values() if p.exists()]
    note = "; optional corpus absent: candidates without texts" if len(present) < len(paths) else ""
    return True, "files present: " + ", ".join(present) + note


def _irds_available(spec: DatasetSpec) -> tuple[bool, str]:
    if importlib.util.find_spec("ir_datasets") is None:
        return False, str(_unavailable(spec, "the ir_datasets package is not installed (pip install ir-datasets)"))
    home = sources.ir_datasets_home()
    parts = (spec.irds_id or "").split("/")
    cache = home.joinpath(*parts[:2])
    if sources.offline_mode():
        if cache.is_dir() and any(cache.iterdir()):
            return True, f"offline mode; ir_datasets cache {cache} present (completeness is checked on load)"
        return False, str(_unavailable(spec, f"offline mode and no ir_datasets cache at {cache}"))
    if cache.is_dir() and any(cache.iterdir()):
        return True, f"ir_datasets '{spec.irds_id}': cache {cache} present (completeness is checked on load)"
    return True, f"ir_datasets '{spec.irds_id}': no cache under {home}; downloaded on load (needs network)"


def load_dataset(
    name: str, data_root: str | Path | None = None, extra_definitions: dict[str, Any] | None = None
) -> Dataset:
    """Load ``name`` from its source; DataUnavailableError says how to provide missing data."""
    spec = get_spec(name, extra_definitions)
    paths = resolve_paths(spec, data_root)
    missing = _missing(spec, paths)
    if missing:
        raise _unavailable(spec, "missing " + "; ".join(missing))
    try:
        return _load(spec, paths)
    except DataUnavailableError as err:
        if spec.how_to_provide and spec.how_to_provide not in str(err):
            raise DataUnavailableError(f"dataset '{name}': {err} How to provide it: {spec.how_to_provide}") from None
        raise


def _load(spec: DatasetSpec, paths: dict[str, Path]) -> Dataset:
    name = spec.name
    if spec.source == "embedded":
        from resrank.data.embedded import build_embedded  # heavy and optional: import on use

        return dataclasses.replace(build_embedded(spec.split), name=name)  # type: ignore[arg-type]
    if spec.source == "retrieve_results":
        return sources.load_retrieve_results(paths["path"], paths.get("qrels"), name=name, judged_only=spec.judged_only)
    if spec.source == "trec":
        corpus = paths.get("corpus")
        if corpus is not None and not corpus.exists():
            corpus = None  # optional corpus absent: candidates without texts
        return sources.load_trec(
            paths["topics"],
            paths["qrels"],
            run=paths.get("run"),
            corpus=corpus,
            name=name,
            judged_only=spec.judged_only,
        )
    if spec.source == "beir":
        dataset = sources.load_beir(paths["path"], spec.split or "test", name=name)
    else:  # ir_datasets
        assert spec.irds_id is not None
        local_qrels = read_trec_qrels(paths["qrels"]) if spec.qrels else None
        if spec.candidates and local_qrels is not None:  # everything local: ir_datasets is not needed
            dataset = Dataset(name=name, queries=[], qrels=local_qrels)
        else:
            dataset = sources.load_ir_datasets(
                spec.irds_id, name, docs=not spec.candidates, judged_only=spec.judged_only and local_qrels is None
            )
            if local_qrels is not None:
                queries = [q for q in dataset.queries if not spec.judged_only or q.qid in local_qrels]
                dataset = Dataset(name=name, queries=queries, qrels=local_qrels, corpus=dataset.corpus)
    if spec.candidates:
        dataset = sources.attach_candidates(dataset, paths["candidates"], judged_only=spec.judged_only)
    return dataset
