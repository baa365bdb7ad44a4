"""Evaluation: trec_eval-exact metrics on ranx kernels, metrics files, paired tests."""

from resrank.eval.metrics import (
    DEFAULT_METRICS,
    EvalResult,
    MetricsRecord,
    compare,
    evaluate,
    paired_p_value,
    read_metrics_json,
    trec_eval_order,
    write_metrics_json,
)

__all__ = [
    "DEFAULT_METRICS",
    "EvalResult",
    "MetricsRecord",
    "compare",
    "evaluate",
    "paired_p_value",
    "read_metrics_json",
    "trec_eval_order",
    "write_metrics_json",
]
