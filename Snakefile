# vqdna: reproduce the VQDNA paper. Logic lives in src/vqdna; rules stay thin.
# snakemake -c2 all                                       # embedded demo (config/config.yaml)
# snakemake --profile slurm all --configfile config/paper.yaml   # the paper on a cluster


include: "workflow/rules/common.smk"
include: "workflow/rules/genomes.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


# The default target (`snakemake -c2` = `snakemake -c2 all`): every final output the rule files
# appended to ALL_TARGETS. It lives here, not in a rule file, because Snakemake resets the default
# target after each `include:`.
rule all:
    input:
        ALL_TARGETS,
    default_target: True
