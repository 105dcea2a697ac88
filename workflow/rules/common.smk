# Shared by every rule file: config validation, the resolved config handed to the CLI,
# and the list of final targets each rule file appends to.
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


rule all:
    input:
        lambda wildcards: ALL_TARGETS,
    default_target: True


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
