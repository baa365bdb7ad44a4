# trec_eval-exact evaluation of every run, and the tidy metrics table everything derives from.


rule evaluate:
    conda:
        "../../environment.yml"
    input:
        data=f"{OUT}/data/{{dataset}}/manifest.json",
        run=f"{OUT}/runs/{{dataset}}/{{system}}.trec",
    output:
        f"{OUT}/metrics/{{dataset}}/{{system}}.json",
    log:
        f"{OUT}/logs/evaluate/{{dataset}}/{{system}}.log",
    shell:
        "{RESRANK} evaluate --config {CONFIG} --data {OUT}/data/{wildcards.dataset} --run {input.run}"
        " --system {wildcards.system} --dataset {wildcards.dataset} --out {output} 2> {log}"


rule collect_metrics:
    """One row per system x dataset x metric; datasets that could not run are listed with the reason."""
    conda:
        "../../environment.yml"
    input:
        all_metric_files(),
    output:
        f"{OUT}/metrics.csv",
    params:
        datasets=lambda w: section("datasets"),
    log:
        f"{OUT}/logs/collect_metrics.log",
    shell:
        "{RESRANK} report collect --config {CONFIG} --out {output} {input} 2> {log}"
