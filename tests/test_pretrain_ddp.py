"""Stage-2 pretraining under DDP on the CPU (2 processes, gloo), as the paper config runs it on 8
GPUs (`torchrun -m vqdna pretrain`): a job killed after a checkpoint and resumed saves what the
uninterrupted job saves, every rank reports the global batch's metrics, and the real torchrun
command logs one MLflow run."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from test_pretrain_train import BASE_CFG, WINDOW
from test_tokenizers_ddp import _free_port
from test_tokens_data import tiny_token_dir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
WORLD = 2

# 2 ranks x 2 micro-batches of 8 = the batch of 32; dropout on (the demo model's default)
CFG = copy.deepcopy(BASE_CFG)
CFG["pretrain"].update(steps=6, checkpoint_every=3, log_every=2, micro_batch_size=8, warmup_steps=2)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return tiny_token_dir(tmp_path_factory.mktemp("ddp"), WINDOW, train_rows=64, train_shards=3,
                          valid_rows=32, valid_offset=200, cfg=BASE_CFG)


def _worker(rank: int, world: int, port: int, tokens: str) -> None:
    """One rank: the whole job, then the same job killed after step 3 and resumed. Each rank
    writes the metrics it returned; rank 0 saves the models."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    import torch.distributed as dist

    from vqdna.models.pretrain import pretrain

    root = Path(tokens)
    try:
        whole = pretrain(root / "tokens", root / "tok", root / "whole", CFG, track=False)
        pretrain(root / "tokens", root / "tok", root / "resumed", CFG, track=False, stop_after=3)
        if rank == 0:
            assert not (root / "resumed").exists() and (root / "resumed.ckpt" / "last.pt").exists()
        dist.barrier()
        resumed = pretrain(root / "tokens", root / "tok", root / "resumed", CFG, track=False)
        (root / f"metrics_rank{rank}.json").write_text(json.dumps({"whole": whole, "resumed": resumed}))
    finally:
        dist.destroy_process_group()


def test_ddp_job_resumes_exactly_and_every_rank_reports_the_global_batch(tokens):
    from safetensors.torch import load_file

    mp.spawn(_worker, args=(WORLD, _free_port(), str(tokens)), nprocs=WORLD, join=True)
    ranks = [json.loads((tokens / f"metrics_rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0]["resumed"]["resumed_from_step"] == 3 and ranks[0]["whole"]["resumed_from_step"] == 0

    whole = load_file(tokens / "whole" / "model.safetensors")
    resumed = load_file(tokens / "resumed" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key

    # the training metrics of the last logging window are the global batch's (reduced over the
    # ranks), so both ranks return the same numbers; each rank's own micro-batches differ
    for run in ("whole", "resumed"):
        for key in ("loss", "loss_level0", "masked_acc_level0", "masked_acc_level1"):
            assert ranks[0][run][key] == ranks[1][run][key], (run, key)
    assert ranks[0]["whole"]["loss"] == ranks[0]["resumed"]["loss"]
    assert ranks[0]["whole"]["eval_loss"] == ranks[0]["resumed"]["eval_loss"]


def test_torchrun_pretrain_command_logs_one_run_from_rank_0(tokens, tmp_path):
    """The command the Slurm profile submits for `gpu: N > 1` (vqdna.cluster.resources), on 2 CPU
    processes: one model, one MLflow run with the training curve, each step's log line once."""
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"device": "cpu", "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
                                   "tokens": BASE_CFG["tokens"], "pretrain": CFG["pretrain"]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           "-m", "vqdna", "pretrain", "--config", str(ROOT / "config" / "config.yaml"), "--config", str(overlay),
           "--tokens", str(tokens / "tokens"), "--tokenizer", str(tokens / "tok"), "--out", str(tmp_path / "model")]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    for step in (2, 4, 6):
        assert out.count(f"model step {step}:") == 1, out[-6000:]

    from vqdna.config import load_config
    from vqdna.tracking import get_client

    client = get_client(load_config([ROOT / "config" / "config.yaml", overlay]))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    losses = client.get_metric_history(runs[0].info.run_id, "loss")
    assert sorted({m.step for m in losses}) == [2, 4, 6]  # step 6 again with the final metrics
