# vqdna: reproduce the VQDNA paper. Logic lives in src/vqdna; rules stay thin.
# snakemake -c2 all                                       # embedded demo (config/config.yaml)
# snakemake --profile slurm all --configfile config/paper.yaml   # the paper on a cluster


include: "workflow/rules/common.smk"
include: "workflow/rules/genomes.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"
