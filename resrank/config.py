"""Typed configuration, validated once at the edge.

The JSON schema in ``resrank/resources/schema.yaml`` (also ``config/schema.yaml``, which
Snakemake validates against) is the single source of defaults and ranges. ``load_config``
validates a YAML file against it, fills defaults, applies a variant's overrides, and
returns frozen dataclasses; nothing downstream sees a raw dict.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from resrank.errors import ResRankError

SCHEMA_PATH = Path(__file__).parent / "resources" / "schema.yaml"


@dataclass(frozen=True)
class RetrievalConfig:
    backend: Literal["bm25s", "rank-bm25"]
    k1: float
    b: float
    depth: int
    remove_query_id_hits: bool


@dataclass(frozen=True)
class EncoderConfig:
    model: str
    pooling: Literal["mean", "last", "cls"]
    max_length: int
    query_max_length: int
    query_prefix: str
    passage_prefix: str
    batch_size: int


@dataclass(frozen=True)
class RerankerConfig:
    model: str
    projector: Literal["auto", "identity", "linear", "mlp"]
    residual: bool
    residual_scale: float
    residual_norm: bool
    scoring: Literal["one-step", "autoregressive"]
    prompt_order: Literal["query-first", "passages-first"]
    instruction: str
    max_query_length: int
    depth: int
    batch_size: int
    query_residual: bool = False


@dataclass(frozen=True)
class StageConfig:
    name: str
    datasets: tuple[str, ...]
    steps: int
    lr: float
    warmup_ratio: float
    weight_decay: float
    queries_per_step: int
    grad_accum: int
    max_grad_norm: float
    list_size: int
    hard_negatives: int
    labels: Literal["qrels", "teacher"]
    checkpoint_every: int
    upsample: dict[str, int] = field(default_factory=dict)
    train_encoder: bool | None = None
    resample: bool = False

    @property
    def draws_upsampled_lists(self) -> bool:
        """Upsampled copies are fresh candidate draws (qrels lists only; teacher lists are fixed)."""
        return self.resample and self.labels == "qrels"


@dataclass(frozen=True)
class TrainConfig:
    mode: Literal["joint", "separate"]
    stages: tuple[StageConfig, ...]
    rank_loss: Literal["ranknet", "listmle"]
    lambda_retrieval: float
    tau_rank: float
    tau_retrieval: float
    train_encoder: bool
    gradient_checkpointing: bool
    distributed: Literal["none", "ddp", "fsdp", "deepspeed"]
    num_processes: int


@dataclass(frozen=True)
class ResRankConfig:
    """One fully resolved system: profile settings with one variant's overrides applied."""

    profile: str
    seed: int
    variant: str
    data_root: str | None
    results_dir: str
    precision: Literal["fp32", "bf16", "auto"]
    eval_datasets: tuple[str, ...]
    retrieval: RetrievalConfig
    encoder: EncoderConfig
    reranker: RerankerConfig
    train: TrainConfig
    raw: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("raw")
        return out

    def fingerprint(self) -> str:
        """sha256 of the resolved settings, recorded in every result this config produces."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ResRankError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except yaml.YAMLError as err:
        raise ResRankError(f"{path}: malformed YAML ({err})") from None
    except UnicodeDecodeError as err:
        raise ResRankError(f"{path}: not valid UTF-8 text (byte {err.start}); re-encode the file as UTF-8") from None
    if not isinstance(data, dict):
        raise ResRankError(f"{path}: top level must be a mapping of config keys")
    return data


def validate(data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate against the schema and fill defaults (as Snakemake's ``validate`` does)."""
    jsonschema = _import_jsonschema()

    data = copy.deepcopy(data)
    schema = load_schema()
    validator_cls = _default_filling_validator(jsonschema.Draft7Validator)
    errors = sorted(validator_cls(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ResRankError(
            f"{source}: config key '{key}': {err.message}; see config/schema.yaml for allowed values"
        )
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (lists are replaced, not merged)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(data: dict[str, Any], variant: str = "resrank", source: str = "config") -> ResRankConfig:
    """Validated config dict + variant name -> typed config for that system."""
    data = validate(data, source)
    variants = data.get("variants", {})
    if variant not in variants:
        known = ", ".join(sorted(variants)) or "(none)"
        raise ResRankError(f"{source}: unknown variant '{variant}'; known variants: {known}")
    resolved = validate(merge(data, variants[variant] or {}), f"{source} (variant '{variant}')")
    data_root = resolved.get("data_root") or os.environ.get("RESRANK_DATA") or None
    train = resolved["train"]
    for name in train["stage_order"]:
        if name not in train["stages"]:
            raise ResRankError(
                f"{source} (variant '{variant}'): config key 'train.stage_order' names stage '{name}' "
                f"but 'train.stages' defines only: {', '.join(sorted(train['stages'])) or '(none)'}"
            )
    stages = tuple(
        _build(StageConfig, {**train["stages"][name], "name": name,
                              "datasets": tuple(train["stages"][name]["datasets"])})
        for name in train["stage_order"]
    )

    return ResRankConfig(
        profile=resolved["profile"],
        seed=resolved["seed"],
        variant=variant,
        data_root=data_root,
        results_dir=resolved["results_dir"],
        precision=resolved["precision"],
        eval_datasets=tuple(resolved["datasets"]["eval"]),
        retrieval=_build(RetrievalConfig, resolved["retrieval"]),
        encoder=_build(EncoderConfig, resolved["encoder"]),
        reranker=_build(RerankerConfig, resolved["reranker"]),
        train=_build(
            TrainConfig,
            {k: v for k, v in train.items() if k not in ("stages", "stage_order")} | {"stages": stages},
        ),
        raw=resolved,
    )


def stage_recipe(cfg: ResRankConfig, stage_name: str) -> dict[str, Any]:
    """What one stage's trained weights depend on besides its training lists: the DAG gives
    variants with equal recipes one shared stage (e.g. a frozen-encoder stage 1 is the same
    for joint, separate and no-retrieval-loss training, since none of those settings acts
    while the encoder is frozen). Runtime-only keys (distribution, checkpointing) are left out."""
    names = [s.name for s in cfg.train.stages]
    if stage_name not in names:
        raise ResRankError(f"variant '{cfg.variant}' has no stage '{stage_name}' (stages: {', '.join(names)})")
    position = names.index(stage_name)
    stage = cfg.train.stages[position]
    encoder_trains = cfg.train.train_encoder if stage.train_encoder is None else stage.train_encoder
    train: dict[str, Any] = {"rank_loss": cfg.train.rank_loss, "tau_rank": cfg.train.tau_rank,
                             "encoder_trains": encoder_trains}
    if encoder_trains:
        train |= {"mode": cfg.train.mode, "lambda_retrieval": cfg.train.lambda_retrieval,
                  "tau_retrieval": cfg.train.tau_retrieval}
    return {
        "seed": cfg.seed,
        "precision": cfg.precision,
        "encoder": asdict(cfg.encoder),
        "reranker": asdict(cfg.reranker),
        "train": train,
        "stage": asdict(replace(stage, train_encoder=encoder_trains)),
        "init": stage_recipe(cfg, names[position - 1]) if position else None,
    }


def load_config(path: str | Path, variant: str = "resrank") -> ResRankConfig:
    return resolve(read_config_file(path), variant, source=str(path))


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _import_jsonschema() -> Any:
    """jsonschema without its optional IRI format checker, whose grammar build costs ~1 s per CLI call.

    The schema uses no ``format`` keywords, so nothing is lost.
    """
    import sys

    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import jsonschema

    return jsonschema


def _default_filling_validator(base: Any) -> Any:
    jsonschema = _import_jsonschema()

    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})
