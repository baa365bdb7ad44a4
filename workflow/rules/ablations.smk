# One named target per variant (e.g. `snakemake --cores 8 ablation_no_residual`): its
# training, reranking and evaluation on every dataset, and nothing of the other variants.


def variant_outputs(variant):
    return [
        f"{OUT}/metrics/{dataset}/{variant}.json" for dataset in PLAN.eval_available if dataset in PLAN.rerankable
    ] + [final_model(variant)]


for _variant in PLAN.variants:

    rule:
        name:
            f"ablation_{_variant.replace('-', '_')}"
        input:
            variant_outputs(_variant),
        localrule: True
