# Rules of the genomes stage: download genomes, cut them into Arrow shards.
# Thin: inputs, outputs, resources, one CLI call; all logic in src/vqdna/genomes/.
#
# Why four shard steps (so that deleting one shard re-makes only it, and a re-run does nothing):
# the number of shards per split is a config key (shards.num_shards), so every shard file is
# known when the DAG is built, before any genome is read; no checkpoint is needed.
#   download_genome   one job per genome   -> resources/genomes/{acc}.fna.gz (+ {acc}.json: sha256, counts)
#                     {acc} is the table row's id: its accession, or taxon_<name> for a row named
#                     `taxon:<species>`, which the job resolves to one NCBI assembly (or reads from
#                     its pin in the lock file, genomes.resolve.lock) and records in {acc}.json.
#                     The id is known from the table alone, so the DAG never waits on NCBI.
#   genome_manifest   all genomes          -> resources/genomes/manifest.tsv; also adds the pins of
#                     newly resolved taxon rows to the lock file (config/genomes.lock.tsv, committed
#                     with the table). One job writes it, never the parallel downloads (they would
#                     race). The lock is no input or output of any rule: as an output Snakemake
#                     would delete it before the job, as an input every new pin would re-run
#                     every download. Changing a pin by hand therefore needs the download re-run:
#                     delete resources/genomes/{acc}.* (the manifest step refuses a mismatch).
#   resolve_genomes   target only          pins every taxon row, downloads nothing (review, commit)
#   shard_prepare     one job per genome   -> results/shards/prep/{acc}.seq (clean bases, read once)
#                                             + {acc}.windows.npz (every window, its record and split)
#                     pretrain genomes only (table column role): species-task-only genomes are
#                     downloaded for the species task, never sharded
#   shard_plan        all genomes          -> results/shards/plan.json: window counts per genome and split;
#                                             shard i of k holds rows i*n//k..(i+1)*n//k of the split's order
#   shard_write       one job per shard    -> results/shards/{split}/{index:05d}.arrow, gathered from the
#                                             memory-mapped .seq files (no second parse of any genome)
#   shard_manifest    all planned shards   -> results/shards/manifest.json (counts, bases, sha256)
# Every shard file is itself a target (rule `shards`, and `all`): Snakemake re-makes a missing
# file only when it is a target or feeds a job that must run anyway. A deleted shard thus
# re-makes that shard and the manifest that lists its checksum, nothing else; the manifest comes
# out byte-identical, so Snakemake's input checksums keep later stages from re-running.
# (A checkpoint would not do: Snakemake 9 then misses a deleted shard when the manifest exists.)
import re

from vqdna.genomes.download import local_source_inputs
from vqdna.genomes.table import PRETRAIN, read_genome_table, rows_with_role

GENOME_ROWS = read_genome_table(config["genomes"]["table"])
GENOME_ACCESSIONS = [row.accession for row in GENOME_ROWS]
PRETRAIN_ACCESSIONS = [row.accession for row in rows_with_role(GENOME_ROWS, PRETRAIN)]
GENOMES_DIR = "resources/genomes"
SHARDS_DIR = "results/shards"


wildcard_constraints:
    accession="|".join(re.escape(a) for a in GENOME_ACCESSIONS) or "NONE",
    pretrain_accession="|".join(re.escape(a) for a in PRETRAIN_ACCESSIONS) or "NONE",
    split="train|valid",
    index=r"\d{5}",


rule download_genome:
    input:
        table=config["genomes"]["table"],
        local=lambda wc: local_source_inputs(config["genomes"], GENOME_ROWS, wc.accession),
    output:
        fasta=f"{GENOMES_DIR}/{{accession}}.fna.gz",
        info=f"{GENOMES_DIR}/{{accession}}.json",
    log:
        "logs/genomes/download_{accession}.log",
    resources:
        **stage_resources("download"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('download')} --accession {{wildcards.accession}} --out-dir {GENOMES_DIR} > {{log}} 2>&1"


rule genome_manifest:
    input:
        expand(f"{GENOMES_DIR}/{{accession}}.json", accession=GENOME_ACCESSIONS),
    output:
        f"{GENOMES_DIR}/manifest.tsv",
    log:
        "logs/genomes/manifest.log",
    resources:
        **stage_resources("download"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('download')} --manifest --out-dir {GENOMES_DIR} > {{log}} 2>&1"


# No `threads:` on the shard rules: `shards.threads` only adds a read-ahead inflate thread
# (prepare) and parallel hashing (manifest), which share the job's core when none is free;
# declaring 2 would serialise the demo's short prepare jobs, whose time is mostly start-up.
rule shard_prepare:
    input:
        f"{GENOMES_DIR}/{{pretrain_accession}}.fna.gz",
    output:
        seq=f"{SHARDS_DIR}/prep/{{pretrain_accession}}.seq",
        index=f"{SHARDS_DIR}/prep/{{pretrain_accession}}.windows.npz",
    log:
        "logs/shards/prepare_{pretrain_accession}.log",
    resources:
        **stage_resources("shard"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('shard')} --step prepare --accession {{wildcards.pretrain_accession}} --genome {{input}}"
        f" --shards-dir {SHARDS_DIR} > {{log}} 2>&1"


rule shard_plan:
    input:
        expand(f"{SHARDS_DIR}/prep/{{accession}}.windows.npz", accession=PRETRAIN_ACCESSIONS),
    output:
        f"{SHARDS_DIR}/plan.json",
    log:
        "logs/shards/plan.log",
    resources:
        **stage_resources("shard"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('shard')} --step plan --shards-dir {SHARDS_DIR} > {{log}} 2>&1"


rule shard_write:
    input:
        plan=f"{SHARDS_DIR}/plan.json",
        prep=expand(
            f"{SHARDS_DIR}/prep/{{accession}}.{{ext}}", accession=PRETRAIN_ACCESSIONS, ext=["seq", "windows.npz"]
        ),
    output:
        f"{SHARDS_DIR}/{{split}}/{{index}}.arrow",
    log:
        "logs/shards/write_{split}_{index}.log",
    resources:
        **stage_resources("shard"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('shard')} --step write --split {{wildcards.split}} --index {{wildcards.index}}"
        f" --shards-dir {SHARDS_DIR} > {{log}} 2>&1"


SHARD_FILES = [
    f"{SHARDS_DIR}/{split}/{index:05d}.arrow"
    for split in ("train", "valid")
    for index in range(config["shards"]["num_shards"][split])
]


rule shard_manifest:
    input:
        plan=f"{SHARDS_DIR}/plan.json",
        shards=SHARD_FILES,
    output:
        f"{SHARDS_DIR}/manifest.json",
    log:
        "logs/shards/manifest.log",
    resources:
        **stage_resources("shard"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('shard')} --step manifest --shards-dir {SHARDS_DIR} > {{log}} 2>&1"


rule resolve_genomes:
    """Pin every `taxon:` row of the genome table in its lock file, download nothing
    (`snakemake -c1 resolve_genomes`); review and commit the lock file before a paper run."""
    input:
        config["genomes"]["table"],
    log:
        "logs/genomes/resolve.log",
    resources:
        **stage_resources("download"),
    conda:
        "../envs/cpu.yaml"
    shell:
        f"{vqdna('download')} --resolve-only --out-dir {GENOMES_DIR} > {{log}} 2>&1"


GENOME_TARGETS = [f"{GENOMES_DIR}/manifest.tsv", *SHARD_FILES, f"{SHARDS_DIR}/manifest.json"]


rule shards:
    """Download and shard the genomes (`snakemake -c2 shards`)."""
    input:
        GENOME_TARGETS,


ALL_TARGETS.extend(GENOME_TARGETS)
