# Rules of the finetune stage (thin: inputs, outputs, resources, one CLI call).
# prepare_dataset: one job per dataset (download/copy, checksum, validate -> parquet splits).
# finetune: one job per tokenizer x dataset x grid point x seed, each in its own directory; a
#   pretraining variant (pretrain.variants) runs as {tok} with its base tokenizer and its own backbone.
# summarize_finetune: one job per tokenizer x dataset -> results/finetune/{tok}/{dataset}/summary.json,
# the single-dataset target (`snakemake results/finetune/hrq/emp_H3/summary.json` re-runs just it).

import re
from pathlib import Path

from vqdna.datasets.registry import load_registry
from vqdna.datasets.species_genomes import species_genomes
from vqdna.finetune.grid import grid_points
from vqdna.variants import trained_variants, variant_finetune_pairs

FT = config["finetune"]
FT_DATASETS = load_registry(config)
FT_POINTS = [p["point"] for p in grid_points(FT["grid"])]
FT_SEEDS = [int(s) for s in FT["seeds"]]
FT_PREP = config["datasets"]["prepared_dir"]
FT_OUT = FT["out_dir"]
FT_TOK_DIR = FT["tokenizer_dir"]
FT_BACKBONE_DIR = FT["backbone_dir"]
# pretraining variants (pretrain.variants, Table 9) -> the tokenizer they were trained on; an alias
# variant (its base's settings) is fine-tuned as its base, so it needs no entry
FT_VARIANT_TOKENIZER = {n: v.tokenizer for n, v in trained_variants(config).items()}
# (tokenizer, dataset) pairs: every dataset for finetune.tokenizers, Table 1 datasets for the rest,
# finetune.variant_datasets for the variants
FT_PAIRS = list(dict.fromkeys([(t, d) for t in FT["tokenizers"] for d in FT_DATASETS] + [
    (t, d) for t in FT["table1_tokenizers"] if t not in FT["tokenizers"]
    for d in FT["table1_datasets"] if d in FT_DATASETS
] + variant_finetune_pairs(config, FT_DATASETS)))


wildcard_constraints:
    dataset=_alternatives(FT_DATASETS),
    point=_alternatives(FT_POINTS),
    seed=r"\d+",


rule prepare_dataset:
    input:
        dataset_source_files,
    output:
        meta=f"{FT_PREP}/{{dataset}}/meta.json",
        splits=expand(f"{FT_PREP}/{{{{dataset}}}}/{{split}}.parquet", split=("train", "dev", "test")),
    log:
        "logs/datasets/{dataset}.log",
    resources:
        **stage_resources("prepare-dataset"),
    conda:
        "../envs/cpu.yaml"
    shell:
        vqdna("prepare-dataset") + f" --dataset {{wildcards.dataset}} --out {FT_PREP}/{{wildcards.dataset}} > {{log}} 2>&1"


rule finetune:
    input:
        data=f"{FT_PREP}/{{dataset}}/meta.json",
        tokenizer=lambda wc: f"{FT_TOK_DIR}/{FT_VARIANT_TOKENIZER.get(wc.tok, wc.tok)}/config.json",
        backbone=f"{FT_BACKBONE_DIR}/{{tok}}/config.json",
    output:
        f"{FT_OUT}/{{tok}}/{{dataset}}/runs/{{point}}/seed{{seed}}/metrics.json",
    log:
        "logs/finetune/{tok}/{dataset}/{point}/seed{seed}.log",
    wildcard_constraints:
        tok=_alternatives(TOKENIZER_NAMES + list(FT_VARIANT_TOKENIZER)),
    params:
        tokenizer_dir=lambda wc: f"{FT_TOK_DIR}/{FT_VARIANT_TOKENIZER.get(wc.tok, wc.tok)}",
    resources:
        **stage_resources("finetune"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        launcher("finetune") + " --tokenizer {wildcards.tok} --dataset {wildcards.dataset}"
        f" --point {{wildcards.point}} --seed {{wildcards.seed}} --data {FT_PREP}/{{wildcards.dataset}}"
        f" --tokenizer-dir {{params.tokenizer_dir}} --backbone-dir {FT_BACKBONE_DIR}/{{wildcards.tok}}"
        " --out {output} > {log} 2>&1"


rule summarize_finetune:
    input:
        data=f"{FT_PREP}/{{dataset}}/meta.json",
        runs=lambda wc: expand(
            f"{FT_OUT}/{wc.tok}/{wc.dataset}/runs/{{point}}/seed{{seed}}/metrics.json", point=FT_POINTS, seed=FT_SEEDS
        ),
    output:
        f"{FT_OUT}/{{tok}}/{{dataset}}/summary.json",
    log:
        "logs/finetune/{tok}/{dataset}/summarize.log",
    wildcard_constraints:
        tok=_alternatives(TOKENIZER_NAMES + list(FT_VARIANT_TOKENIZER)),
    resources:
        **stage_resources("summarize"),
    conda:
        "../envs/cpu.yaml"
    shell:
        vqdna("summarize") + " --tokenizer {wildcards.tok} --dataset {wildcards.dataset}"
        f" --runs {FT_OUT}/{{wildcards.tok}}/{{wildcards.dataset}}/runs --data {FT_PREP}/{{wildcards.dataset}}"
        " --out {output} > {log} 2>&1"


ALL_TARGETS.extend(f"{FT_OUT}/{t}/{d}/summary.json" for t, d in FT_PAIRS)
