# Shared parse-time state: the merged config the CLI reads, and the plan of the DAG.
import json

from resrank.workflow import make_plan, write_if_changed

PLAN = make_plan(config)
OUT = PLAN.out
CONFIG = PLAN.config_path
write_if_changed(CONFIG, config)

# `resrank` from the active environment; RESRANK_CLI overrides (e.g. a cluster module).
RESRANK = os.environ.get("RESRANK_CLI", "resrank")


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    system=r"[A-Za-z0-9_.@-]+",
    variant=r"[A-Za-z0-9_.-]+",
    stage=r"[A-Za-z0-9_.-]+",


def res(rule_name, key, default):
    """Per-rule resources from config `resources: {rule: {...}}` (profiles, Slurm)."""
    return config.get("resources", {}).get(rule_name, {}).get(key, default)


def section(*keys):
    """A config section as JSON: used as params so a change re-runs only dependent jobs."""
    node = config
    for key in keys:
        node = node.get(key, {})
    return json.dumps(node, sort_keys=True)


def variant_params(variant):
    """Everything that defines one variant's training, so editing it re-runs only that variant."""
    keys = ("seed", "encoder", "reranker", "train")
    base = {k: config.get(k) for k in keys}
    return json.dumps({"base": base, "override": config["variants"].get(variant, {})}, sort_keys=True)
