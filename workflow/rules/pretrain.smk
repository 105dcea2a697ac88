# Rules of the pretrain stage (thin: inputs, outputs, resources, one CLI call).
#   tokenize   one job per tokenizer x split -> results/tokens/{tok}/{split}.bin + {split}.meta.json
#              (+ {split}.lengths.bin for variable-rate tokenizers; layout in vqdna.tokens)
#   pretrain   one job per tokenizer         -> results/pretrain/{tok}/ (save_pretrained dir, written
#              at once); resumable checkpoints in results/pretrain/{tok}.ckpt/
# Which tokenizers: config pretrain.tokenizers (null = every name in tokenizers.train).

PRETRAIN_TOKENIZERS = list(config["pretrain"].get("tokenizers") or config["tokenizers"]["train"])
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
