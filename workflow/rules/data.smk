# Data preparation and the first stage (BM25, or imported candidates / published runs).


rule prepare_data:
    conda:
        "../../environment.yml"
    output:
        f"{OUT}/data/{{dataset}}/manifest.json",
    params:
        spec=lambda w: json.dumps(
            [config["datasets"]["definitions"].get(w.dataset), config["datasets"]["max_queries"].get(w.dataset)]
        ),
    log:
        f"{OUT}/logs/prepare_data/{{dataset}}.log",
    shell:
        "{RESRANK} data prepare --config {CONFIG} --dataset {wildcards.dataset}"
        " --out {OUT}/data/{wildcards.dataset} 2> {log}"


rule first_stage:
    conda:
        "../../environment.yml"
    input:
        f"{OUT}/data/{{dataset}}/manifest.json",
    output:
        f"{OUT}/runs/{{dataset}}/bm25.trec",
    params:
        retrieval=lambda w: section("retrieval"),
    threads: lambda w: res("first_stage", "threads", 2)
    resources:
        mem_mb=lambda w: res("first_stage", "mem_mb", 4000),
        runtime=lambda w: res("first_stage", "runtime", 60),
    log:
        f"{OUT}/logs/first_stage/{{dataset}}.log",
    shell:
        "{RESRANK} retrieve bm25 --config {CONFIG} --data {OUT}/data/{wildcards.dataset}"
        " --out {output} 2> {log}"
