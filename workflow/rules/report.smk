# Rules of the report stage (thin: inputs, outputs, resources, one CLI call).
#   probe        Table 1/2 measurements of one tokenizer on one dataset -> results/probe/{tok}/{dataset}.json
#   aggregate    Tables 1-9 (csv/md/tex) and figures (png/svg)           -> results/tables/, results/figures/
#   report_html  the Snakemake HTML report of the finished workflow     -> results/report.html
# All logic is in src/vqdna/report/; output names in vqdna.report.names. Upstream locations come
# from the finetune rules (FT_TOK_DIR, FT_BACKBONE_DIR, FT_PREP, FT_OUT), included before this file.

import re

from vqdna.report.aggregate import ablation_variants, report_tokenizers
from vqdna.report.names import FIGURES, TABLES

REPORT = config["report"]
REPORT_TOKENIZERS = report_tokenizers(config)
PROBE_DATASET = REPORT["table1_dataset"]
# Tables 7/8 probe stage-1 tokenizer variants without a pretrained backbone (report.ablations).
# Table 9 needs no rule here: its pretraining variants' fine-tune summaries are in ALL_TARGETS.
ABLATION_TOKENIZERS = (
    [t for t in ablation_variants(config, tables=(7, 8)) if t in TOKENIZER_NAMES]
    if REPORT["ablations"]["enabled"] else []
)


report: "../report/workflow.rst"


rule probe:
    input:
        tokenizer=f"{FT_TOK_DIR}/{{tok}}/config.json",
        backbone=f"{FT_BACKBONE_DIR}/{{tok}}/config.json",
        dataset=f"{FT_PREP}/{{dataset}}/meta.json",
    output:
        "results/probe/{tok}/{dataset}.json",
    log:
        "logs/probe/{tok}/{dataset}.log",
    wildcard_constraints:
        tok=_alternatives(REPORT_TOKENIZERS),
    resources:
        **stage_resources("probe"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        vqdna("probe") + " --tok {wildcards.tok} --dataset {wildcards.dataset}"
        f" --tokenizer-dir {FT_TOK_DIR}/{{wildcards.tok}} --pretrain-dir {FT_BACKBONE_DIR}/{{wildcards.tok}}"
        f" --dataset-dir {FT_PREP}/{{wildcards.dataset}} --out {{output}} > {{log}} 2>&1"


rule probe_ablation:
    input:
        tokenizer=f"{FT_TOK_DIR}/{{tok}}/config.json",
        dataset=f"{FT_PREP}/{{dataset}}/meta.json",
        backbone=_ablation_backbone,
    output:
        "results/probe/{tok}/{dataset}.json",
    log:
        "logs/probe/{tok}/{dataset}.log",
    wildcard_constraints:
        tok=_alternatives(ABLATION_TOKENIZERS),
    params:
        backbone=lambda wc, input: f"--pretrain-dir {FT_BACKBONE_DIR}/{wc.tok}" if input.backbone else "",
    resources:
        **stage_resources("probe"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        vqdna("probe") + " --tok {wildcards.tok} --dataset {wildcards.dataset}"
        f" --features {REPORT['ablations']['probe_features']} {{params.backbone}}"
        f" --tokenizer-dir {FT_TOK_DIR}/{{wildcards.tok}} --dataset-dir {FT_PREP}/{{wildcards.dataset}}"
        " --out {output} > {log} 2>&1"


rule aggregate:
    input:
        summaries=finetune_summaries,
        probes=expand("results/probe/{tok}/{dataset}.json", tok=REPORT_TOKENIZERS, dataset=PROBE_DATASET),
        ablation_probes=expand("results/probe/{tok}/{dataset}.json", tok=ABLATION_TOKENIZERS,
                               dataset=REPORT["ablations"]["probe_dataset"]),
        tokenizer_metrics=expand(f"{FT_TOK_DIR}/{{tok}}/metrics.json", tok=TOKENIZER_NAMES),
        figure5=figure5_inputs,
        paper=REPORT["paper_results"],
    output:
        manifest="results/tables/manifest.json",
        **_table_outputs(),
    log:
        "logs/report/aggregate.log",
    resources:
        **stage_resources("aggregate"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        vqdna("aggregate") + " --probe-dir results/probe --tables results/tables --figures results/figures > {log} 2>&1"


# `snakemake --report` of the finished workflow, as the last job of `all` (report.html.build):
# a nested, lock-free Snakemake that only reads the metadata of the jobs above.
localrules: report_html


rule report_html:
    input:
        rules.aggregate.output,
    output:
        "results/report.html",
    log:
        "logs/report/report_html.log",
    params:
        snakefile=workflow.main_snakefile,
    conda:
        "../envs/vqdna.yaml"
    shell:
        f"snakemake --snakefile {{params.snakefile}} --nolock --configfile {RESOLVED_CONFIG}"
        " --report {output} -- results/tables/manifest.json > {log} 2>&1"


ALL_TARGETS.append("results/tables/manifest.json")
if REPORT["html"]["build"]:
    ALL_TARGETS.append("results/report.html")
