# Shared parse-time state: the merged config the CLI reads, and the plan of the DAG.
import json
import re

from snakemake.exceptions import WorkflowError

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


CLUSTER_MODEL_THREADS = 2
"""CPUs per model job where jobs do not share --cores (cluster executors such as Slurm)."""


def model_threads(rule_name):
    """Model jobs claim all of --cores by default: on a small machine they then run one at a
    time with every core, instead of several oversubscribing the CPU. Cluster executors
    have no --cores (each job gets its own allocation): CLUSTER_MODEL_THREADS there.
    Override per rule with `resources: {rule: {threads: N}}`."""
    try:
        cores = workflow.cores
    except WorkflowError:  # no --cores: a cluster executor
        cores = CLUSTER_MODEL_THREADS
    return res(rule_name, "threads", max(1, cores or 1))


def section(*keys):
    """A config section as JSON: used as params so a change re-runs only dependent jobs."""
    node = config
    for key in keys:
        node = node.get(key, {})
    return json.dumps(node, sort_keys=True)


def variant_params(variant):
    """Everything that defines one variant, so editing it re-runs only that variant's reranking."""
    keys = ("seed", "precision", "encoder", "reranker", "train")
    base = {k: config.get(k) for k in keys}
    return json.dumps({"base": base, "override": config["variants"].get(variant, {})}, sort_keys=True)


def stage_params(variant, stage):
    """Everything one stage's weights depend on (resrank.config.stage_recipe), so editing a
    variant re-runs only the stages it changes."""
    return PLAN.stage_recipe[variant][stage]


def stage_dir(variant, stage):
    """A stage's folder: that of the first variant with the same recipe (shared stages train once)."""
    return f"{OUT}/models/{PLAN.stage_owner[variant][stage]}/{stage}"


# ----------------------------------------------------------------- DAG helpers
def stage_inputs(w):
    order = PLAN.stage_order[w.variant]
    if w.stage not in order:
        raise ValueError(f"variant '{w.variant}' has no stage '{w.stage}' (stages: {', '.join(order)})")
    owner = PLAN.stage_owner[w.variant][w.stage]
    if owner != w.variant:
        raise ValueError(f"stage '{w.stage}' of variant '{w.variant}' is shared: it is trained as {owner}'s")
    datasets = PLAN.train_datasets[w.variant][w.stage]
    inputs = {
        "data": [f"{OUT}/data/{d}/manifest.json" for d in datasets],
        "runs": [f"{OUT}/runs/{d}/bm25.trec" for d in datasets],
    }
    position = order.index(w.stage)
    if position > 0:
        inputs["init"] = f"{stage_dir(w.variant, order[position - 1])}/DONE"
    return inputs


def init_flag(w, input):
    return f"--init {os.path.dirname(input.init)}" if "init" in input.keys() else ""


def final_model(variant):
    return f"{stage_dir(variant, PLAN.stage_order[variant][-1])}/DONE"


VARIANTS_RE = "|".join(re.escape(v) for v in PLAN.variants)


ENCODERS_RE = "|".join(re.escape(v) for v in (*PLAN.variants, "encoder-untrained"))


def checkpoint_of(model):
    """The trained stage folder of a variant; none for the untrained encoder."""
    return [] if model == "encoder-untrained" else [final_model(model)]


def needs_corpus_embeddings(model, dataset):
    """Dense retrieval (and so RRF) needs the main model's vectors of the whole corpus."""
    dense = any(pool in PLAN.pools for pool in ("dense", "rrf"))
    return dense and model == "resrank" and dataset in PLAN.with_corpus


def config_variant(model):
    """The untrained encoder is the main variant's encoder before training."""
    return "resrank" if model == "encoder-untrained" else model


def checkpoint_flag(model):
    if model == "encoder-untrained":
        return "--untrained"
    return f"--checkpoint {os.path.dirname(final_model(model))}"


def encoder_model(system):
    return "encoder-untrained" if system == "encoder-untrained" else "resrank"


def all_metric_files():
    return [
        f"{OUT}/metrics/{dataset}/{system}.json"
        for dataset in PLAN.eval_available
        for system in PLAN.systems(dataset)
    ]


TABLE_EXTS = ("md", "csv", "tex")


POSITION_VARIANTS = [v for v in ("resrank", "autoregressive") if v in PLAN.variants]


def table_files(*names):
    return [f"{OUT}/tables/{name}.{ext}" for name in names for ext in TABLE_EXTS]


def figure_files(*names):
    return [f"{OUT}/figures/{name}.{ext}" for name in names for ext in ("png", "pdf")]


def position_files():
    return [
        f"{OUT}/position/{dataset}/{variant}.json"
        for dataset in PLAN.position_datasets
        for variant in POSITION_VARIANTS
        if variant in PLAN.variants_on(dataset)
    ]


def report_outputs():
    return [f"{OUT}/report.html"]


def variant_outputs(variant):
    return [
        f"{OUT}/metrics/{dataset}/{variant}.json"
        for dataset in PLAN.eval_available
        if variant in PLAN.variants_on(dataset)
    ] + [final_model(variant)]


def rerank_stats_files():
    return [f"{OUT}/stats/{d}/{v}.json" for d in PLAN.rerankable for v in PLAN.variants_on(d)]
