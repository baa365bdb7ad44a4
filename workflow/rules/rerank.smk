# Encode passages once per model checkpoint, then rerank each candidate pool in one pass.
rule encode:
    conda:
        "../../environment.yml"
    input:
        data=f"{OUT}/data/{{dataset}}/manifest.json",
        first_stage=f"{OUT}/runs/{{dataset}}/bm25.trec",
        checkpoint=lambda w: checkpoint_of(w.model),
    output:
        f"{OUT}/embeddings/{{model}}/{{dataset}}.safetensors",
    wildcard_constraints:
        model=ENCODERS_RE,
    params:
        checkpoint=lambda w: checkpoint_flag(w.model),
        variant=lambda w: config_variant(w.model),
        scope=lambda w: "--whole-corpus" if needs_corpus_embeddings(w.model, w.dataset) else "",
        encoder=lambda w: section("encoder"),
        depth=lambda w: config["reranker"]["depth"],
    threads: lambda w: model_threads("encode")
    resources:
        mem_mb=lambda w: res("encode", "mem_mb", 8000),
        runtime=lambda w: res("encode", "runtime", 60),
        gpu=lambda w: res("encode", "gpus", 0),
    log:
        f"{OUT}/logs/encode/{{model}}/{{dataset}}.log",
    shell:
        "{RESRANK} encode --config {CONFIG} --variant {params.variant} {params.checkpoint} {params.scope}"
        " --data {OUT}/data/{wildcards.dataset} --first-stage {input.first_stage} --out {output} 2> {log}"


rule rerank:
    conda:
        "../../environment.yml"
    input:
        data=f"{OUT}/data/{{dataset}}/manifest.json",
        first_stage=f"{OUT}/runs/{{dataset}}/{{pool}}.trec",
        embeddings=f"{OUT}/embeddings/{{variant}}/{{dataset}}.safetensors",
        checkpoint=lambda w: final_model(w.variant),
    output:
        run=f"{OUT}/runs/{{dataset}}/{{variant}}@{{pool}}.trec",
        stats=f"{OUT}/stats/{{dataset}}/{{variant}}@{{pool}}.json",
    wildcard_constraints:
        variant=VARIANTS_RE,
        pool="bm25|dense|rrf",
    params:
        checkpoint=lambda w: checkpoint_flag(w.variant),
        variant=lambda w: variant_params(w.variant),
    threads: lambda w: model_threads("rerank")
    resources:
        mem_mb=lambda w: res("rerank", "mem_mb", 8000),
        runtime=lambda w: res("rerank", "runtime", 60),
        gpu=lambda w: res("rerank", "gpus", 0),
    log:
        f"{OUT}/logs/rerank/{{dataset}}/{{variant}}@{{pool}}.log",
    shell:
        "{RESRANK} rerank --config {CONFIG} --variant {wildcards.variant} {params.checkpoint}"
        " --data {OUT}/data/{wildcards.dataset} --first-stage {input.first_stage}"
        " --embeddings {input.embeddings} --out {output.run} --stats {output.stats} 2> {log}"


rule rerank_bm25_pool:
    """The BM25 pool is the paper's main setting: its runs carry the plain variant name."""
    conda:
        "../../environment.yml"
    input:
        run=f"{OUT}/runs/{{dataset}}/{{variant}}@bm25.trec",
        stats=f"{OUT}/stats/{{dataset}}/{{variant}}@bm25.json",
    output:
        run=f"{OUT}/runs/{{dataset}}/{{variant}}.trec",
        stats=f"{OUT}/stats/{{dataset}}/{{variant}}.json",
    wildcard_constraints:
        variant=VARIANTS_RE,
    localrule: True
    shell:
        "cp {input.run} {output.run} && cp {input.stats} {output.stats}"


rule encoder_rerank:
    """Cosine between encoder query and passage vectors over the same BM25 candidates."""
    conda:
        "../../environment.yml"
    input:
        data=f"{OUT}/data/{{dataset}}/manifest.json",
        first_stage=f"{OUT}/runs/{{dataset}}/bm25.trec",
        embeddings=lambda w: f"{OUT}/embeddings/{encoder_model(w.system)}/{w.dataset}.safetensors",
        checkpoint=lambda w: checkpoint_of(encoder_model(w.system)),
    output:
        run=f"{OUT}/runs/{{dataset}}/{{system}}.trec",
    wildcard_constraints:
        system="encoder-untrained|encoder-only",
    params:
        checkpoint=lambda w: checkpoint_flag(encoder_model(w.system)),
        variant=lambda w: config_variant(encoder_model(w.system)),
    threads: lambda w: model_threads("encoder_rerank")
    log:
        f"{OUT}/logs/rerank/{{dataset}}/{{system}}.log",
    shell:
        "{RESRANK} rerank --encoder-only --config {CONFIG} --variant {params.variant} {params.checkpoint}"
        " --data {OUT}/data/{wildcards.dataset} --first-stage {input.first_stage}"
        " --embeddings {input.embeddings} --out {output.run} 2> {log}"


rule dense_retrieval:
    """First-stage dense retrieval over the whole corpus with the jointly trained encoder."""
    conda:
        "../../environment.yml"
    input:
        data=f"{OUT}/data/{{dataset}}/manifest.json",
        embeddings=f"{OUT}/embeddings/resrank/{{dataset}}.safetensors",
        checkpoint=lambda w: final_model("resrank"),
    output:
        f"{OUT}/runs/{{dataset}}/dense.trec",
    params:
        checkpoint=lambda w: checkpoint_flag("resrank"),
    threads: lambda w: model_threads("dense_retrieval")
    log:
        f"{OUT}/logs/dense/{{dataset}}.log",
    shell:
        "{RESRANK} retrieve dense --config {CONFIG} --variant resrank {params.checkpoint}"
        " --data {OUT}/data/{wildcards.dataset} --embeddings {input.embeddings} --out {output} 2> {log}"


rule fuse_rrf:
    conda:
        "../../environment.yml"
    input:
        bm25=f"{OUT}/runs/{{dataset}}/bm25.trec",
        dense=f"{OUT}/runs/{{dataset}}/dense.trec",
    output:
        f"{OUT}/runs/{{dataset}}/rrf.trec",
    params:
        retrieval=lambda w: section("retrieval"),
    log:
        f"{OUT}/logs/rrf/{{dataset}}.log",
    shell:
        "{RESRANK} retrieve fuse --config {CONFIG} --runs {input.bm25} {input.dense} --out {output} 2> {log}"
