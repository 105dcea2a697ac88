# Rules of the pretrain stage (thin: inputs, outputs, resources, one CLI call).
#   tokenize   one job per tokenizer x split -> results/tokens/{tok}/{split}.bin + {split}.meta.json
#              (+ {split}.lengths.bin for variable-rate tokenizers; layout in vqdna.tokens)
#   pretrain   one job per tokenizer         -> results/pretrain/{tok}/ (save_pretrained dir, written
#              at once); resumable checkpoints in results/pretrain/{tok}.ckpt/
#   pretrain_variant  one job per pretrain.variants entry -> results/pretrain/{variant}/: the base
#              tokenizer's token files, the variant's pretrain settings (`vqdna pretrain --variant`);
#              a variant with its base's settings is an alias and has no job (vqdna.variants)
# Which tokenizers: config pretrain.tokenizers (null = every name in tokenizers.train).

import re

from vqdna.variants import trained_variants

PRETRAIN_TOKENIZERS = list(config["pretrain"].get("tokenizers") or config["tokenizers"]["train"])
# variant name -> base tokenizer, for the variants that need their own pretraining
PRETRAIN_VARIANTS = {n: v.tokenizer for n, v in trained_variants(config).items()}
PRETRAIN_SPLITS = [s for s in (config["pretrain"]["train_split"], config["pretrain"].get("eval_split")) if s]


rule tokenize:
    input:
        tokenizer="results/tokenizers/{tok}/config.json",
        manifest="results/shards/manifest.json",
    output:
        bin="results/tokens/{tok}/{split}.bin",
        meta="results/tokens/{tok}/{split}.meta.json",
    log:
        "logs/tokens/{tok}_{split}.log",
    resources:
        **stage_resources("tokenize"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        launcher("tokenize") + " --tokenizer results/tokenizers/{wildcards.tok} --shards results/shards"
        " --split {wildcards.split} --out results/tokens/{wildcards.tok} --name {wildcards.tok} > {log} 2>&1"


rule pretrain:
    input:
        tokens=expand("results/tokens/{{tok}}/{split}.meta.json", split=PRETRAIN_SPLITS),
        tokenizer="results/tokenizers/{tok}/config.json",
    output:
        "results/pretrain/{tok}/config.json",
    log:
        "logs/pretrain/{tok}.log",
    resources:
        **stage_resources("pretrain"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        launcher("pretrain") + " --tokens results/tokens/{wildcards.tok} --tokenizer results/tokenizers/{wildcards.tok}"
        " --out results/pretrain/{wildcards.tok} --name {wildcards.tok} > {log} 2>&1"


ALL_TARGETS.extend(expand("results/pretrain/{tok}/config.json", tok=PRETRAIN_TOKENIZERS))


rule pretrain_variant:
    input:
        tokens=lambda wc: expand("results/tokens/{tok}/{split}.meta.json", tok=PRETRAIN_VARIANTS[wc.variant],
                                 split=PRETRAIN_SPLITS),
        tokenizer=lambda wc: f"results/tokenizers/{PRETRAIN_VARIANTS[wc.variant]}/config.json",
    output:
        "results/pretrain/{variant}/config.json",
    log:
        "logs/pretrain/{variant}.log",
    wildcard_constraints:
        variant="|".join(re.escape(v) for v in PRETRAIN_VARIANTS) or "NONE",
    params:
        base=lambda wc: PRETRAIN_VARIANTS[wc.variant],
    resources:
        **stage_resources("pretrain"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        launcher("pretrain") + " --variant {wildcards.variant} --tokens results/tokens/{params.base}"
        " --tokenizer results/tokenizers/{params.base} --out results/pretrain/{wildcards.variant}"
        " --name {wildcards.variant} > {log} 2>&1"


ALL_TARGETS.extend(expand("results/pretrain/{variant}/config.json", variant=PRETRAIN_VARIANTS))
