# One named target per variant (e.g. `snakemake --cores 8 ablation_no_residual`): its
# training, reranking and evaluation on every dataset, and nothing of the other variants.


for _variant in PLAN.variants:

    rule:
        name:
            f"ablation_{_variant.replace('-', '_')}"
        conda:
            "../../environment.yml"
        input:
            variant_outputs(_variant),
        localrule: True
