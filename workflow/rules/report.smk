# Tables, figures and the executed notebook report, all derived from DAG outputs.

rule tables:
    conda:
        "../../environment.yml"
    input:
        metrics=f"{OUT}/metrics.csv",
    output:
        report(table_files("main"), caption="../report/table_main.rst", category="Tables"),
        report(table_files("bm25_vs_published"), caption="../report/table_bm25.rst", category="Tables"),
    params:
        report=lambda w: section("report"),
    log:
        f"{OUT}/logs/tables.log",
    shell:
        "{RESRANK} report tables --config {CONFIG} --metrics {input.metrics} --out-dir {OUT}/tables 2> {log}"


rule ablation_tables:
    conda:
        "../../environment.yml"
    input:
        metrics=f"{OUT}/metrics.csv",
        stats=rerank_stats_files(),
    output:
        report(table_files("ablations"), caption="../report/table_ablations.rst", category="Tables"),
        report(table_files("pools"), caption="../report/table_pools.rst", category="Tables"),
    log:
        f"{OUT}/logs/ablation_tables.log",
    shell:
        "{RESRANK} report ablations --config {CONFIG} --out-dir {OUT}/tables 2> {log}"


rule position_study:
    conda:
        "../../environment.yml"
    input:
        data=f"{OUT}/data/{{dataset}}/manifest.json",
        first_stage=f"{OUT}/runs/{{dataset}}/bm25.trec",
        embeddings=f"{OUT}/embeddings/{{variant}}/{{dataset}}.safetensors",
        checkpoint=lambda w: final_model(w.variant),
    output:
        f"{OUT}/position/{{dataset}}/{{variant}}.json",
    wildcard_constraints:
        variant=VARIANTS_RE,
    params:
        checkpoint=lambda w: checkpoint_flag(w.variant),
        orders=config["report"]["position_orders"],
    threads: lambda w: model_threads("position_study")
    resources:
        mem_mb=lambda w: res("position_study", "mem_mb", 8000),
        runtime=lambda w: res("position_study", "runtime", 60),
        gpu=lambda w: res("position_study", "gpus", 0),
    log:
        f"{OUT}/logs/position/{{dataset}}/{{variant}}.log",
    shell:
        "{RESRANK} position --config {CONFIG} --variant {wildcards.variant} {params.checkpoint}"
        " --data {OUT}/data/{wildcards.dataset} --first-stage {input.first_stage}"
        " --embeddings {input.embeddings} --random-orders {params.orders} --out {output} 2> {log}"


rule efficiency:
    """Latency and token counts of the four reranking methods on one backbone (random weights)."""
    conda:
        "../../environment.yml"
    output:
        report(table_files("efficiency"), caption="../report/table_efficiency.rst", category="Tables"),
        f"{OUT}/tables/efficiency.json",
    params:
        efficiency=lambda w: section("efficiency"),
    threads: lambda w: model_threads("efficiency")
    resources:
        mem_mb=lambda w: res("efficiency", "mem_mb", 8000),
        runtime=lambda w: res("efficiency", "runtime", 60),
        gpu=lambda w: res("efficiency", "gpus", 0),
    log:
        f"{OUT}/logs/efficiency.log",
    shell:
        "{RESRANK} bench efficiency --config {CONFIG} --out-dir {OUT}/tables --fig-dir {OUT}/figures 2> {log}"


rule bm25_throughput:
    """BM25 index time and queries/second of both backends (bm25s, rank-bm25) on every prepared
    dataset with a corpus, with the profile's retrieval settings; one thread, like `efficiency`."""
    conda:
        "../../environment.yml"
    input:
        data=[f"{OUT}/data/{d}/manifest.json" for d in PLAN.with_corpus],
    output:
        report(table_files("bm25_throughput"), caption="../report/table_bm25_throughput.rst", category="Tables"),
        f"{OUT}/tables/bm25_throughput.json",
    params:
        data=lambda w, input: " ".join(os.path.dirname(p) for p in input.data),
        retrieval=lambda w: section("retrieval"),
        repeats=lambda w: section("efficiency", "repeats"),
    threads: 1
    resources:
        mem_mb=lambda w: res("bm25_throughput", "mem_mb", 4000),
        runtime=lambda w: res("bm25_throughput", "runtime", 60),
    log:
        f"{OUT}/logs/bm25_throughput.log",
    shell:
        "{RESRANK} bench bm25 --config {CONFIG} --data {params.data} --out-dir {OUT}/tables 2> {log}"


rule figures:
    conda:
        "../../environment.yml"
    input:
        metrics=f"{OUT}/metrics.csv",
        ablations=f"{OUT}/tables/ablations.csv",
        efficiency=f"{OUT}/tables/efficiency.csv",
        position=position_files(),
        models=[final_model(v) for v in PLAN.variants],
    output:
        report(
            figure_files("ndcg_per_dataset"),
            caption="../report/ndcg_per_dataset.rst",
            category="Figures",
        ),
        report(figure_files("ablation_deltas"), caption="../report/ablation_deltas.rst", category="Figures"),
        report(figure_files("loss_curves"), caption="../report/loss_curves.rst", category="Figures"),
        report(figure_files("efficiency_scaling"), caption="../report/efficiency.rst", category="Figures"),
        report(figure_files("position_sensitivity"), caption="../report/position.rst", category="Figures"),
    log:
        f"{OUT}/logs/figures.log",
    shell:
        "{RESRANK} report figures --config {CONFIG} --out-dir {OUT}/figures {input.position} 2> {log}"


rule notebook_report:
    conda:
        "../../environment.yml"
    input:
        table_files("main", "bm25_vs_published", "ablations", "pools", "efficiency", "bm25_throughput"),
        rules.figures.output,
        notebook="notebooks/report.ipynb",
    output:
        notebook=f"{OUT}/report.ipynb",
        html=report(f"{OUT}/report.html", caption="../report/report.rst", category="Report"),
    log:
        f"{OUT}/logs/notebook_report.log",
    shell:
        "{RESRANK} report notebook --config {CONFIG} --notebook {input.notebook}"
        " --executed {output.notebook} --html {output.html} 2> {log}"
