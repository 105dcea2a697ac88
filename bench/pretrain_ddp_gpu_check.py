"""config/paper.yaml's stage-2 job under DDP on the GPUs of one machine (NCCL), at small step
counts: the path the paper's 8-GPU pretraining takes (torchrun, bf16 weights + fp32 masters,
compiled blocks, the three fused Triton ops), which the CPU tests cover only with gloo.

    torchrun --standalone --nproc-per-node=2 bench/pretrain_ddp_gpu_check.py \
        --tokens TOKDIR --tokenizer TOKENIZERDIR --work /tmp/ddpcheck --out OUT/ddp_check.json

1. the job as configured (deterministic off), `--steps` steps: its logged tokens/s and losses;
2. with pretrain.deterministic on: the whole job, and the same job killed after its first
   checkpoint and resumed; rank 0 compares the two saved models bitwise.
Needs no MLflow (track=False) and no config schema (paper.yaml read as YAML, the bench's
overrides applied on top)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--resume-steps", type=int, default=12)
    p.add_argument("--micro-batch", type=int, default=128)
    p.add_argument("--accum", type=int, default=2, help="micro-batches a step on each GPU")
    p.add_argument("--no-resume", action="store_true", help="skip part 2")
    args = p.parse_args()

    from safetensors.torch import load_file

    from vqdna.models.pretrain import pretrain

    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg["device"] = "cuda"
    base = cfg["pretrain"]
    base.update(micro_batch_size=args.micro_batch, batch_size=args.micro_batch * world * args.accum, warmup_steps=5,
                log_every=5, eval_every=0, eval_batches=2)
    work = Path(args.work)
    report = {"world": world, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "pretrain_overrides": {k: base[k] for k in ("micro_batch_size", "batch_size", "warmup_steps",
                                                          "log_every", "eval_batches")}}

    def job(name, steps, checkpoint_every, deterministic, stop_after=None):
        c = copy.deepcopy(cfg)
        c["pretrain"].update(steps=steps, checkpoint_every=checkpoint_every, deterministic=deterministic)
        t0 = time.perf_counter()
        m = pretrain(args.tokens, args.tokenizer, work / name, c, track=False, stop_after=stop_after)
        return {**{k: v for k, v in m.items() if isinstance(v, (int, float))}, "wall_s": time.perf_counter() - t0}

    report["as_configured"] = job("configured", args.steps, args.steps, False)
    if args.no_resume:
        if rank == 0:
            Path(args.out).write_text(json.dumps(report, indent=1))
            print(json.dumps(report, indent=1))
        _finish()
        return
    half = args.resume_steps // 2
    report["det_whole"] = job("det_whole", args.resume_steps, half, True)
    job("det_resumed", args.resume_steps, half, True, stop_after=half)
    report["det_resumed"] = job("det_resumed", args.resume_steps, half, True)
    if rank == 0:
        a = load_file(work / "det_whole" / "model.safetensors")
        b = load_file(work / "det_resumed" / "model.safetensors")
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        report["resume_bitwise_equal"] = not differ and a.keys() == b.keys()
        report["resume_differing_tensors"] = differ[:10]
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
    _finish()


def _finish() -> None:
    if dist.is_initialized():  # one process (WORLD_SIZE 1) never starts a process group
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
