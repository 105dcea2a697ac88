# Shared by all rule files. Config validation, the resolved config handed to the CLI,
# and the list of final targets each rule file appends to.
import re
from pathlib import Path

from snakemake.utils import min_version, validate

from vqdna.config import validate_config, write_resolved

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "../schemas/config.schema.yaml")
# Snakemake's validate fills no defaults inside the $ref'd section schemas; vqdna's does.
config.update(validate_config(config))

# Every job reads this one validated file (defaults filled, --config overrides applied).
RESOLVED_CONFIG = str(write_resolved(config, "results/config.resolved.json"))
VQDNA = f"vqdna {{stage}} --config {RESOLVED_CONFIG}"

# Rule files append their final outputs here; `all` collects them.
ALL_TARGETS = []


def vqdna(stage):
    """The CLI call prefix for one stage."""
    return VQDNA.format(stage=stage)


def stage_resources(stage):
    """Scheduler resources of one stage from config `cluster.resources.<stage>`
    (gpu, mem_mb, runtime, cpus_per_task, ...); the Slurm profile turns them into sbatch flags.
    Use as `resources: **stage_resources("pretrain")`."""
    from vqdna.cluster.resources import snakemake_resources

    return snakemake_resources(config, stage)


def launcher(stage):
    """`vqdna <stage>` for one process, `torchrun ... -m vqdna <stage>` when the stage asks for
    several GPUs (DDP). Multi-node: the Slurm environment supplies the rendezvous (docs/cluster.md)."""
    from vqdna.cluster.resources import launch_command

    return launch_command(config, stage, RESOLVED_CONFIG)


# ---- helpers of the rule files (Snakemake's lint wants functions apart from rules). They read
# the constants each rule file defines (FT_*, REPORT, ...) when called, after every include.


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "NONE"


# finetune.smk
def dataset_source_files(wildcards):
    """Local files a dataset is built from, so editing them re-runs its jobs (URLs: fetched in the job)."""
    spec = FT_DATASETS[wildcards.dataset]
    if spec.format == "species":
        return [f for g in species_genomes(config) for f in g["files"]]
    src = Path(spec.source)
    if spec.source.startswith(("http://", "https://", "file://")) or not src.is_dir():
        return []
    return sorted(str(p) for p in src.rglob("*") if p.is_file())


# report.smk
def _ablation_backbone(wildcards):
    """Tables 7/8 probe the tokenizer variants on their codebooks unless configured otherwise."""
    if REPORT["ablations"]["probe_features"] == "backbone":
        return [f"{FT_BACKBONE_DIR}/{wildcards.tok}/config.json"]
    return []


def finetune_summaries(wildcards):
    """Every fine-tune summary the workflow builds (the finetune rules add them to ALL_TARGETS)."""
    pattern = rf"{re.escape(FT_OUT)}/[^/]+/[^/]+/summary\.json"
    return sorted(t for t in ALL_TARGETS if re.fullmatch(pattern, t))


def figure5_inputs(wildcards):
    fig5 = REPORT["figure5"]
    if fig5["tokenizer"] not in TOKENIZER_NAMES:
        return []  # the figure says why it is empty
    # the prepared dataset's meta.json (vqdna.datasets.store) stands for its directory
    return [f"{FT_TOK_DIR}/{fig5['tokenizer']}/config.json", f"{FT_PREP}/{fig5['dataset']}/meta.json"]


def _table_outputs():
    out = {}
    for name in TABLES:
        caption = f"../report/{name}.rst"
        out[f"{name}_csv"] = report(f"results/tables/{name}.csv", caption=caption, category="Tables")
        out[f"{name}_md"] = f"results/tables/{name}.md"
        out[f"{name}_tex"] = f"results/tables/{name}.tex"
    for name in FIGURES:
        caption = f"../report/{name}.rst"
        out[f"{name}_png"] = report(f"results/figures/{name}.png", caption=caption, category="Figures")
        out[f"{name}_svg"] = f"results/figures/{name}.svg"
    return out
