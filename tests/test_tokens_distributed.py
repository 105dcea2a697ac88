"""The torchrun paths on CPU (gloo): 2-rank tokenization equals 1 rank byte for byte; DDP pretraining runs."""

from __future__ import annotations

import os
import socket

import torch.multiprocessing as mp

from test_tokens_data import tiny_vq_tokenizer, write_shards
from vqdna.tokens import token_paths
from vqdna.tokens.tokenize import tokenize_split

CFG = {"device": "cpu", "seed": 0, "tokens": {"batch_nt": 512}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, root, cfg: dict) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": f"test{port}"})
    import torch.distributed as dist

    try:
        # One spawn for both jobs (starting interpreters is the slow part on a 2-core CI machine).
        tokenize_split(root / "tok", root / "shards", "train", root / "two", CFG)
        from vqdna.models.pretrain import pretrain

        pretrain(root / "two", root / "tok", root / "ddp", cfg, track=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_ranks_tokenize_like_one_and_pretrain_with_ddp(tmp_path):
    inputs = tmp_path
    write_shards(inputs / "shards", "train", window=64, rows_per_shard=6, n_shards=5)  # 5 shards: uneven split
    tiny_vq_tokenizer("hrq").save_pretrained(inputs / "tok")
    cfg = {**CFG, "pretrain": {"model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                         "intermediate_size": 64},
                               "max_len": 16, "steps": 4, "batch_size": 8, "micro_batch_size": 2, "warmup_steps": 1,
                               "log_every": 2, "checkpoint_every": 2, "eval_split": None, "cpu_threads": 1}}
    mp.start_processes(_rank_main, args=(2, free_port(), inputs, cfg), nprocs=2, join=True, start_method="spawn")

    tokenize_split(inputs / "tok", inputs / "shards", "train", inputs / "one", CFG)
    for key in ("bin", "meta"):
        assert token_paths(inputs / "one", "train")[key].read_bytes() == token_paths(inputs / "two", "train")[key].read_bytes()
    assert not [p for p in (inputs / "two").iterdir() if p.name.startswith(".")]  # no temporary left

    from vqdna.models import VQDNAForMaskedLM

    model = VQDNAForMaskedLM.from_pretrained(inputs / "ddp")
    assert model.config.vocab_sizes == [8, 16]
    assert not (inputs / "ddp.ckpt").exists()
