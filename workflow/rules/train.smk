# Stage-1 and stage-2 training per variant. Each stage is one job; stage 2 starts from
# stage 1's final checkpoint. A killed job re-run by Snakemake resumes from the stage's
# last checkpoint (the trainer finds it in the stage folder); only DONE marks completion.


def stage_inputs(w):
    order = PLAN.stage_order[w.variant]
    if w.stage not in order:
        raise ValueError(f"variant '{w.variant}' has no stage '{w.stage}' (stages: {', '.join(order)})")
    datasets = PLAN.train_datasets[w.variant][w.stage]
    inputs = {
        "data": [f"{OUT}/data/{d}/manifest.json" for d in datasets],
        "runs": [f"{OUT}/runs/{d}/bm25.trec" for d in datasets],
    }
    position = order.index(w.stage)
    if position > 0:
        inputs["init"] = f"{OUT}/models/{w.variant}/{order[position - 1]}/DONE"
    return inputs


def init_flag(w, input):
    return f"--init {os.path.dirname(input.init)}" if "init" in input.keys() else ""


def final_model(variant):
    return f"{OUT}/models/{variant}/{PLAN.stage_order[variant][-1]}/DONE"


rule train_stage:
    input:
        unpack(stage_inputs),
    output:
        f"{OUT}/models/{{variant}}/{{stage}}/DONE",
    params:
        variant=lambda w: variant_params(w.variant),
        datasets=lambda w: ",".join(PLAN.train_datasets[w.variant][w.stage]),
        init=init_flag,
    threads: lambda w: res("train_stage", "threads", 2)
    resources:
        mem_mb=lambda w: res("train_stage", "mem_mb", 8000),
        runtime=lambda w: res("train_stage", "runtime", 120),
        gpus=lambda w: res("train_stage", "gpus", 0),
    log:
        f"{OUT}/logs/train/{{variant}}/{{stage}}.log",
    shell:
        "{RESRANK} train --config {CONFIG} --variant {wildcards.variant} --stage {wildcards.stage}"
        " --datasets {params.datasets} --data-dir {OUT}/data --runs-dir {OUT}/runs {params.init}"
        " --out {OUT}/models/{wildcards.variant}/{wildcards.stage} 2> {log}"
