"""Stage-1 tokenizer training under DDP on the CPU (2 processes, gloo), as the paper config runs it on
8 GPUs (`torchrun -m vqdna train-tokenizer`): a job killed after a checkpoint and resumed saves what
the uninterrupted job saves, every rank holds the same weights and codebooks, the logged training
metrics are the global batch's, and the real torchrun command logs one MLflow run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from test_tokenizers_ddp import _free_port
from test_tokenizers_train import GENOMES, read_fasta, settings, tiny_model, windows, write_shard

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
WORLD = 2

# global batch 8 = 2 ranks x 4 rows. k-means (init at step 0, again after warm-up at step 4) reads 512
# latents = all 8 rows at length 64, more than a rank's slice; dead codes restart after step 6 from rank
# 0's latents (a single process draws from all 8 rows), so up to the log at step 6 a single process on
# the whole batch trains the same model
SETTINGS = dict(batch_size=8, max_steps=10, warmup_steps=4, seq_len_warmup=32, seq_len=64, restart_every=6,
                kmeans_after_warmup=True, kmeans_max_samples=512, checkpoint_every=4, log_every=2,
                valid_windows=8)
KILL_AT = 7  # after the restart at step 6; the resumed job redoes steps 5-7 from the step-4 checkpoint
SAME_AS_SINGLE = (2, 4, 6)
SEED = 5


def _model():
    # a higher dead-code threshold than the demo's, so that the restart after step 6 restarts codes
    return dataclasses.replace(tiny_model("hrq"), dead_code_threshold=DEAD)


DEAD = 4.0


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Train: lambda phage windows; valid: the Y. pestis plasmid (never trained on)."""
    root = tmp_path_factory.mktemp("ddp_shards")
    train = windows(read_fasta(GENOMES / "NC_001416_lambda_phage.fa.gz"))
    np.random.default_rng(0).shuffle(train)
    write_shard(root / "train" / "00000.arrow", train[:100])
    write_shard(root / "train" / "00001.arrow", train[100:])
    write_shard(root / "valid" / "00000.arrow", windows(read_fasta(GENOMES / "NC_005816_yersinia_pestis_plasmid.fna.gz")))
    return root


def _worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    """One rank: the whole job, then the same job killed at step 7 and resumed. Each rank records the
    metrics handed to its `log_metrics` and saves its own model's state after each finished job."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from vqdna.tokenizers.model import VQVAE
    from vqdna.tokenizers.trainer import SimulatedKill, TrainSettings, train_vq_tokenizer

    built: list = []  # the trainer's model is not returned: keep each VQVAE this rank builds
    init = VQVAE.__init__

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    VQVAE.__init__ = keep
    root = Path(out)
    s = TrainSettings.from_dict(json.loads((root / "settings.json").read_text()))
    cfg = _model()
    logs: dict[str, list] = {"whole": [], "killed": [], "resumed": []}

    def job(name: str, work: str, log_as: str, stop_at_step: int | None = None) -> None:
        first = len(built)
        train_vq_tokenizer(cfg, s, shards, root / name, work_dir=root / work, seed=SEED, device="cpu",
                           progress=False, log_metrics=lambda m, step: logs[log_as].append([step, m]),
                           stop_at_step=stop_at_step)
        torch.save({k: v.clone() for k, v in built[first].state_dict().items()}, root / f"{name}_rank{rank}.pt")

    try:
        job("whole", "w1", "whole")
        try:
            job("resumed", "w2", "killed", stop_at_step=KILL_AT)
            raise AssertionError("the kill hook did not fire")
        except SimulatedKill:
            pass
        if rank == 0:
            assert not (root / "resumed").exists() and (root / "w2" / "checkpoint.pt").exists()
        dist.barrier()
        job("resumed", "w2", "resumed")
        (root / f"logs_rank{rank}.json").write_text(json.dumps(logs))
    finally:
        dist.destroy_process_group()


TIMING = {"train/nt_per_s"}  # wall-clock: differs between runs and ranks


def _steady(entries: list) -> dict[int, dict]:
    return {step: {k: v for k, v in m.items() if k not in TIMING} for step, m in entries}


def test_ddp_job_resumes_exactly_every_rank_agrees_and_logs_the_global_batch(shards, tmp_path):
    from safetensors.torch import load_file

    from vqdna.tokenizers.trainer import train_vq_tokenizer

    s = settings(**SETTINGS)
    (tmp_path / "settings.json").write_text(json.dumps(dataclasses.asdict(s)))
    mp.spawn(_worker, args=(WORLD, _free_port(), str(shards), str(tmp_path)), nprocs=WORLD, join=True)

    # killed at step 7 and resumed from step 4: the uninterrupted job's tokenizer, bitwise
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for key in whole:  # weights, EMA codebooks and counts
        assert torch.equal(whole[key], resumed[key]), key
    assert not (tmp_path / "w2" / "checkpoint.pt").exists()

    # every rank ends with the same weights and codebooks, and rank 0's are the ones saved
    for job in ("whole", "resumed"):
        states = [torch.load(tmp_path / f"{job}_rank{r}.pt") for r in range(WORLD)]
        assert states[0].keys() == states[1].keys() and whole.keys() <= states[0].keys()
        for key in states[0]:
            assert torch.equal(states[0][key], states[1][key]), (job, key)
        for key in whole:
            assert torch.equal(states[0][key], whole[key]), (job, key)

    logs = [json.loads((tmp_path / f"logs_rank{r}.json").read_text()) for r in range(WORLD)]
    ddp = _steady(logs[0]["whole"])
    assert sorted(ddp) == [2, 4, 6, 8, 10]
    assert ddp[6]["train/restarted_l0"] + ddp[6]["train/restarted_l1"] > 0  # the resumed job redid a restart
    assert sorted(_steady(logs[0]["killed"])) == [2, 4, 6]
    assert _steady(logs[0]["resumed"]) == {step: ddp[step] for step in (6, 8, 10)}

    # the logged metrics are the global batch's: up to the restart they match one process training
    # on the whole batch of 8 (rank 0's 4 rows alone give a loss and code counts of their own)
    one = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_vq_tokenizer(_model(), s, shards, tmp_path / "single", work_dir=tmp_path / "w3", seed=SEED,
                           device="cpu", progress=False, log_metrics=lambda m, step: one.append([step, m]))
    finally:
        torch.set_num_threads(threads)
    single = _steady(one)
    for step in SAME_AS_SINGLE:
        assert ddp[step].keys() == single[step].keys()
        for key, value in single[step].items():
            # the same arithmetic up to the order of the DDP sums (gradients, EMA statistics)
            assert ddp[step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key, ddp[step][key], value)

    # and every rank computes them: both ranks hand the same numbers to their `log_metrics`
    for job in ("whole", "killed", "resumed"):
        assert _steady(logs[0][job]) == _steady(logs[1][job]), job


def test_torchrun_train_tokenizer_command_logs_one_run_from_rank_0(shards, tmp_path):
    """The command the Slurm profile submits for `gpu: N > 1` (vqdna.cluster.resources), on 2 CPU
    processes with the demo config's hrq at a few steps: one tokenizer, one MLflow run with the curve."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = {"device": "cpu", "tracking.uri": uri, "tokenizers.training.batch_size": 8,
            "tokenizers.training.max_steps": 6, "tokenizers.training.warmup_steps": 2,
            "tokenizers.training.seq_len_warmup": 32, "tokenizers.training.seq_len": 64,
            "tokenizers.training.restart_every": 3, "tokenizers.training.checkpoint_every": 2,
            "tokenizers.training.log_every": 2, "tokenizers.training.valid_windows": 16}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "hrq"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           "-m", "vqdna", "train-tokenizer", "--config", str(ROOT / "config" / "config.yaml"),
           *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")],
           "--name", "hrq", "--shards", str(shards), "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-6000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["valid_windows"] == 16
    assert metrics["train_nucleotides_this_run"] == 2 * 8 * 32 + 4 * 8 * 64  # the global batch, counted once
    assert (out / "model.safetensors").is_file() and not (tmp_path / "hrq.ckpt").exists()
    assert log.count("hrq: valid reconstruction") == 1, log[-6000:]

    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["tokenizer"] == "hrq" and "valid/reconstruction_accuracy" in runs[0].data.metrics
    losses = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in losses) == [2, 4, 6]
