# ResRank reproduction DAG: prepare data -> first stage -> stage-1/stage-2 training ->
# encode -> rerank -> evaluate -> tables, figures, executed report; plus the ablations.
# Every rule is a thin call of the `resrank` CLI. Default profile: config/config.yaml;
# others: `snakemake --configfile config/paper.yaml ...` (or config/smoke.yaml).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/rerank.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablations.smk"


rule all:
    default_target: True
    input:
        f"{OUT}/metrics.csv",
        report_outputs(),
