"""Start one torchrun per node of a multi-node Slurm job (`srun` runs this once per node).

    srun --nodes=2 --ntasks-per-node=1 python -m vqdna.cluster.launch --nproc-per-node=8 \
        -- pretrain --config results/config.resolved.json

reads the allocation from the environment Slurm sets for every task and replaces itself with

    torchrun --nnodes=2 --node-rank=$SLURM_NODEID --nproc-per-node=8 --rdzv-backend=c10d \
        --rdzv-endpoint=<first node of SLURM_JOB_NODELIST>:29500 --rdzv-id=$SLURM_JOB_ID \
        -m vqdna pretrain --config ...

torchrun then sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR for the DDP code of the stage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Mapping, Sequence


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list (`scontrol show hostnames`, else a simple parse)."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    return _parse_first(nodelist)


def _parse_first(nodelist: str) -> str:
    """`gpu[03-05,07],cpu1` -> `gpu03`; `node1,node2` -> `node1`."""
    head, depth, cut = nodelist, 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            cut = i
            break
    head = nodelist[:cut]
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    first = rest.split("]", 1)[0].split(",", 1)[0].split("-", 1)[0]
    return prefix + first


def torchrun_argv(stage_argv: Sequence[str], nproc_per_node: int, port: int,
                  env: Mapping[str, str]) -> list[str]:
    try:
        nnodes = int(env["SLURM_NNODES"])
        node_rank = int(env["SLURM_NODEID"])
        nodelist = env["SLURM_JOB_NODELIST"]
        job_id = env["SLURM_JOB_ID"]
    except KeyError as exc:
        raise SystemExit(f"vqdna.cluster.launch: {exc.args[0]} is not set; run me through srun in a Slurm job")
    return [
        "torchrun", f"--nnodes={nnodes}", f"--node-rank={node_rank}",
        f"--nproc-per-node={nproc_per_node}", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={first_host(nodelist)}:{port}", f"--rdzv-id={job_id}",
        "-m", "vqdna", *stage_argv,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vqdna.cluster.launch", description=__doc__.splitlines()[0])
    p.add_argument("--nproc-per-node", type=int, required=True)
    p.add_argument("--port", type=int, default=29500)
    p.add_argument("--dry-run", action="store_true", help="print the torchrun command instead of running it")
    p.add_argument("stage_argv", nargs=argparse.REMAINDER, help="-- <stage> [args...]")
    a = p.parse_args(argv)
    stage_argv = a.stage_argv[1:] if a.stage_argv[:1] == ["--"] else a.stage_argv
    if not stage_argv:
        p.error("missing the stage to run after --")
    cmd = torchrun_argv(stage_argv, a.nproc_per_node, a.port, os.environ)
    if a.dry_run:
        print(" ".join(cmd))
        return 0
    os.execvp(cmd[0], cmd)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
