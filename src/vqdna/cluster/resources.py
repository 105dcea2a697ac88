"""Per-stage scheduler resources and the command that starts a stage (one process, torchrun, or
one torchrun per node on a multi-node Slurm job).

`workflow/rules/common.smk` calls these through `stage_resources(stage)` and `launcher(stage)`;
they are plain functions of the config so they are tested without Snakemake.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping

# config keys (cluster.schema.yaml $defs/stage) that pass to Snakemake unchanged
_PASS = ("cpus_per_task", "mem_mb", "runtime", "slurm_partition", "slurm_account", "constraint")


def stage_config(cfg: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """`cluster.resources.<stage>` with unset (None / "") keys dropped."""
    node = ((cfg or {}).get("cluster") or {}).get("resources") or {}
    return {k: v for k, v in dict(node.get(stage) or {}).items() if v is not None and v != ""}


def gpus_per_node(cfg: Mapping[str, Any], stage: str) -> int:
    return int(stage_config(cfg, stage).get("gpu", 0) or 0)


def num_nodes(cfg: Mapping[str, Any], stage: str) -> int:
    return max(1, int(stage_config(cfg, stage).get("nodes", 1) or 1))


def snakemake_resources(cfg: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The rule's `resources:` for one stage, in the terms of snakemake-executor-plugin-slurm.

    One node: `gpu` (+ `gpu_model`) become the plugin's `--gpus=[model:]N`. Several nodes: the
    plugin's `--gpus` is a per-job total that Slurm may spread unevenly, so GPUs are asked per
    node through `slurm_extra` (`--gpus-per-node`), with one task per node (`tasks`) and
    `mpi` set so the plugin's job step runs our `srun` line itself instead of wrapping it in
    `srun -n1` (which would confine the job to one node).
    """
    src = stage_config(cfg, stage)
    out = {k: src[k] for k in _PASS if k in src}
    gpu = int(src.get("gpu", 0) or 0)
    model = src.get("gpu_model")
    extra = [src["slurm_extra"]] if src.get("slurm_extra") else []
    nodes = num_nodes(cfg, stage)
    if nodes > 1:
        out["nodes"] = nodes
        out["tasks"] = nodes
        out["mpi"] = "srun"
        if gpu:
            extra.insert(0, f"--gpus-per-node={model + ':' if model else ''}{gpu}")
            out["gpus_per_node"] = gpu  # informative (shows in the job list); not read by the plugin
    else:
        if "gpu" in src:
            out["gpu"] = gpu
        if gpu and model:
            out["gpu_model"] = model
    if extra:
        out["slurm_extra"] = " ".join(extra)
    return out


def launch_command(cfg: Mapping[str, Any], stage: str, config_path: str) -> str:
    """Shell prefix that runs `vqdna <stage> --config <config_path>` with the stage's GPUs.

    - gpu <= 1, one node: `vqdna <stage> ...`
    - gpu = N > 1, one node: `torchrun --standalone --nproc-per-node=N -m vqdna <stage> ...`
    - nodes = M > 1: `srun` starts one `python -m vqdna.cluster.launch` per node, which reads
      the Slurm environment (SLURM_NNODES, SLURM_NODEID, SLURM_JOB_NODELIST, SLURM_JOB_ID) and
      execs `torchrun --nnodes=M --node-rank=<id> --rdzv-backend=c10d
      --rdzv-endpoint=<first node>:<cluster.rendezvous_port> ...`.
    """
    tail = f"-m vqdna {stage} --config {shlex.quote(str(config_path))}"
    n = gpus_per_node(cfg, stage)
    nodes = num_nodes(cfg, stage)
    if nodes > 1:
        port = int(((cfg or {}).get("cluster") or {}).get("rendezvous_port", 29500))
        return (
            f"srun --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
            f"python -m vqdna.cluster.launch --nproc-per-node={max(n, 1)} --port={port} -- "
            f"{stage} --config {shlex.quote(str(config_path))}"
        )
    if n > 1:
        return f"torchrun --standalone --nproc-per-node={n} {tail}"
    return f"vqdna {stage} --config {shlex.quote(str(config_path))}"
