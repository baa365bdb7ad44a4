"""Models: name resolution (``loading``), the encoder ``E`` (``encoder``) and ResRank (``resrank``)."""

from resrank.model.encoder import Encoder, pool
from resrank.model.loading import known_names, load_backbone, resolve_model_path, tiny_config
from resrank.model.resrank import (
    AutoregressiveResult,
    RerankOutput,
    ResRankModel,
    build_projector,
    is_causal_backbone,
)

__all__ = [
    "AutoregressiveResult",
    "Encoder",
    "RerankOutput",
    "ResRankModel",
    "build_projector",
    "is_causal_backbone",
    "known_names",
    "load_backbone",
    "pool",
    "resolve_model_path",
    "tiny_config",
]
