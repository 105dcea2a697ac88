# Rules of the tokenizer stage (thin: inputs, outputs, resources, one CLI call).
# One job per name in config tokenizers.train (vq, hrq, kmer6, bpe, onehot, ...): the whole
# directory results/tokenizers/{tok}/ appears at once (written to a temporary name, renamed);
# config.json and metrics.json exist for every kind, the weights file depends on the kind.
# vq/hrq checkpoints live in results/tokenizers/{tok}.ckpt/ so a killed job resumes there.

import re

TOKENIZER_NAMES = list(config["tokenizers"]["train"])


wildcard_constraints:
    tok="|".join(re.escape(t) for t in TOKENIZER_NAMES) or "NONE",


rule train_tokenizer:
    input:
        manifest="results/shards/manifest.json",
    output:
        config="results/tokenizers/{tok}/config.json",
        metrics="results/tokenizers/{tok}/metrics.json",
    log:
        "logs/tokenizers/train_{tok}.log",
    threads: int(stage_resources("train-tokenizer").get("cpus_per_task", 1))
    resources:
        **stage_resources("train-tokenizer"),
    conda:
        "../envs/vqdna.yaml"
    shell:
        launcher("train-tokenizer") + " --name {wildcards.tok} --shards results/shards"
        " --out results/tokenizers/{wildcards.tok} --threads {threads} --no-progress > {log} 2>&1"


ALL_TARGETS.extend(expand("results/tokenizers/{tok}/metrics.json", tok=TOKENIZER_NAMES))
