# Stage-1 and stage-2 training per variant. Each stage is one job; stage 2 starts from
# stage 1's final checkpoint. Variants whose stage has the same recipe (resrank.config.stage_recipe)
# share one job and folder, under the first such variant's name. A killed job re-run by Snakemake resumes from the stage's
# last checkpoint (the trainer finds it in the stage folder); only DONE marks completion.


rule train_stage:
    conda:
        "../../environment.yml"
    input:
        unpack(stage_inputs),
    output:
        f"{OUT}/models/{{variant}}/{{stage}}/DONE",
    params:
        recipe=lambda w: stage_params(w.variant, w.stage),
        datasets=lambda w: ",".join(PLAN.train_datasets[w.variant][w.stage]),
        init=init_flag,
    threads: lambda w: model_threads("train_stage")
    resources:
        mem_mb=lambda w: res("train_stage", "mem_mb", 8000),
        runtime=lambda w: res("train_stage", "runtime", 120),
        gpu=lambda w: res("train_stage", "gpus", 0),
    log:
        f"{OUT}/logs/train/{{variant}}/{{stage}}.log",
    shell:
        "{RESRANK} train --config {CONFIG} --variant {wildcards.variant} --stage {wildcards.stage}"
        " --datasets {params.datasets} --data-dir {OUT}/data --runs-dir {OUT}/runs {params.init}"
        " --out {OUT}/models/{wildcards.variant}/{wildcards.stage} 2> {log}"
