"""Training the VQ/HRQ tokenizers on real DNA: exact resume after a kill, held-out reconstruction,
the `vqdna train-tokenizer` CLI for every kind, and clear errors for bad shards."""

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from vqdna import cli
from vqdna.config import load_config
from vqdna.errors import InputError
from vqdna.genomes.shards_io import shard_schema
from vqdna.tokenizers import load_tokenizer
from vqdna.tokenizers.model import VQModelConfig
from vqdna.tokenizers.trainer import SimulatedKill, TrainSettings, train_vq_tokenizer

ROOT = Path(__file__).resolve().parents[1]
GENOMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomes"
WINDOW = 256


def read_fasta(path: Path) -> str:
    with gzip.open(path, "rt") as fh:
        return "".join(line.strip().upper() for line in fh if not line.startswith(">"))


def windows(seq: str, width: int = WINDOW) -> list[str]:
    out = [seq[i:i + width] for i in range(0, len(seq) - width + 1, width)]
    return [w for w in out if set(w) <= set("ACGT")]


def write_shard(path: Path, seqs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "sequence": pa.array([s.encode() for s in seqs], pa.binary(WINDOW)),
        "accession": ["a"] * len(seqs), "species": ["s"] * len(seqs),
        "record_id": ["r"] * len(seqs), "start": list(range(len(seqs))),
    }, schema=shard_schema(WINDOW))
    with pa.OSFile(str(path), "wb") as fh, pa.ipc.new_file(fh, table.schema) as writer:
        writer.write_table(table)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Train: lambda phage + human chr1 windows; valid: a genome never seen in training (Y. pestis plasmid)."""
    root = tmp_path_factory.mktemp("shards")
    train = windows(read_fasta(GENOMES / "NC_001416_lambda_phage.fa.gz"))
    train += windows(read_fasta(GENOMES / "human_GRCh37_chr1_first240kb.fasta.gz"))[:400]
    np.random.default_rng(0).shuffle(train)
    for i in range(0, len(train), 200):
        write_shard(root / "train" / f"{i // 200:05d}.arrow", train[i:i + 200])
    valid = windows(read_fasta(GENOMES / "NC_005816_yersinia_pestis_plasmid.fna.gz"))
    write_shard(root / "valid" / "00000.arrow", valid)
    return root


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; several spin-waiting threads crawl on a busy 2-core CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    # one store for the module: creating an MLflow sqlite schema costs seconds
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def tiny_model(kind="vq") -> VQModelConfig:
    return VQModelConfig(kind=kind, dim=32, stem_dim=32, depth=2, layer_scale_init=0.1, ema_decay=0.9,
                         taps=[2] if kind == "vq" else [1, 2], codebook_sizes=[64] if kind == "vq" else [32, 64],
                         beta=0.5 if kind == "vq" else 0.9, dead_code_threshold=0.5)


def settings(**kw) -> TrainSettings:
    cfg = load_config([ROOT / "config" / "config.yaml"])["tokenizers"]["training"]
    return TrainSettings.from_dict({**cfg, **kw})


def test_resume_after_kill_gives_the_same_weights(shards, tmp_path):
    from safetensors.torch import load_file

    s = settings(batch_size=8, max_steps=12, warmup_steps=4, seq_len_warmup=32, seq_len=64, restart_every=3,
                 checkpoint_every=4, kmeans_after_warmup=True, log_every=5, valid_windows=8)
    cfg = tiny_model("hrq")
    common = dict(seed=3, device="cpu", progress=False)
    train_vq_tokenizer(cfg, s, shards, tmp_path / "straight", work_dir=tmp_path / "w1", **common)

    # killed at step 6: steps 5-6 are lost (last checkpoint at step 4), the out dir never appears
    with pytest.raises(SimulatedKill):
        train_vq_tokenizer(cfg, s, shards, tmp_path / "resumed", work_dir=tmp_path / "w2", stop_at_step=6, **common)
    assert (tmp_path / "w2" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed").exists()
    assert torch.load(tmp_path / "w2" / "checkpoint.pt", weights_only=False)["step"] == 4
    metrics = train_vq_tokenizer(cfg, s, shards, tmp_path / "resumed", work_dir=tmp_path / "w2", **common)
    assert metrics["steps"] == 12
    assert not (tmp_path / "w2" / "checkpoint.pt").exists()

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:  # weights, EMA codebooks and counts all identical
        assert torch.equal(a[key], b[key]), key


def test_resume_with_bf16_weights_restores_the_fp32_masters(shards, tmp_path):
    """precision: bf16_weights (+ the fused conv+norm): the checkpoint carries the fp32 masters, so a
    resumed run ends with the same fp32 weights as an uninterrupted one, and those are what is saved."""
    from safetensors.torch import load_file

    s = settings(batch_size=8, max_steps=8, warmup_steps=2, seq_len_warmup=32, seq_len=32, restart_every=3,
                 checkpoint_every=4, log_every=4, valid_windows=8, precision="bf16_weights", dwconv_ln="fused")
    cfg = tiny_model("vq")
    common = dict(seed=4, device="cpu", progress=False)
    train_vq_tokenizer(cfg, s, shards, tmp_path / "straight", work_dir=tmp_path / "w1", **common)
    with pytest.raises(SimulatedKill):
        train_vq_tokenizer(cfg, s, shards, tmp_path / "resumed", work_dir=tmp_path / "w2", stop_at_step=6, **common)
    train_vq_tokenizer(cfg, s, shards, tmp_path / "resumed", work_dir=tmp_path / "w2", **common)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a["encoder.blocks.0.fc1.weight"].dtype == torch.float32
    # the masters moved off the bf16 grid: the saved weights are not bf16 values
    w = a["encoder.blocks.0.fc1.weight"]
    assert not torch.equal(w, w.bfloat16().float())
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("kind", ["vq", "hrq"])
def test_trained_tiny_tokenizer_reconstructs_held_out_dna(shards, tmp_path, kind):
    s = settings(max_steps=80, warmup_steps=20, restart_every=20, valid_windows=64)
    metrics = train_vq_tokenizer(tiny_model(kind), s, shards, tmp_path / kind, work_dir=tmp_path / "w",
                                 seed=0, device="cpu", progress=False)
    assert metrics["valid_reconstruction_accuracy"] >= 0.95, metrics
    # the saved tokenizer, loaded back, round-trips held-out plasmid DNA through the list API
    tok = load_tokenizer(tmp_path / kind)
    held_out = windows(read_fasta(GENOMES / "NC_005816_yersinia_pestis_plasmid.fna.gz"), 200)[:10]
    held_out.append(held_out[0][:37])  # an odd, shorter length in the same call
    ids = tok.encode(held_out)
    assert [a.shape for a in ids] == [(len(s_), tok.levels) for s_ in held_out]
    recon = tok.decode(ids)
    same = sum(a == b for s_, r in zip(held_out, recon) for a, b in zip(s_, r))
    assert same / sum(map(len, held_out)) >= 0.95
    written = json.loads((tmp_path / kind / "metrics.json").read_text())
    assert len(written["usage_pct"]) == len(written["perplexity"]) == tok.levels
    assert all(0 < u <= 100 for u in written["usage_pct"])
    vectors = tok.code_vectors()
    assert [tuple(v.shape) for v in vectors] == [(k, 32) for k in tok.vocab_sizes]
    # embed(ids) = mean of the level code vectors
    first = torch.as_tensor(ids[0][:3])
    expected = sum(vectors[level][first[:, level]] for level in range(tok.levels)) / tok.levels
    assert torch.allclose(tok.embed(first), expected)


@pytest.mark.parametrize("name", ["vq", "kmer6", "bpe", "onehot"])
def test_cli_writes_the_tokenizer_dir(shards, tmp_path, mlflow_uri, name):
    out = tmp_path / name
    argv = ["train-tokenizer", "--config", str(ROOT / "config" / "config.yaml"),
            "--set", f"tracking.uri={mlflow_uri}",
            "--set", "tokenizers.training.max_steps=20", "--set", "tokenizers.training.valid_windows=16",
            "--set", "tokenizers.defs.bpe.vocab_size=256",
            "--name", name, "--shards", str(shards), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["kind"] == load_config([ROOT / "config" / "config.yaml"])["tokenizers"]["defs"][name]["kind"]
    assert metrics["valid_windows"] == 16
    tok = load_tokenizer(out)
    if name != "vq":  # baselines are exact
        assert metrics["valid_reconstruction_accuracy"] == 1.0
    assert len(tok.encode(["ACGTACGTAC"])) == 1
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.tokenizer = '{name}'")
    assert len(runs) == 1 and "valid/reconstruction_accuracy" in runs[0].data.metrics
    assert runs[0].info.status == "FINISHED"


def test_unknown_tokenizer_name_is_a_config_error(shards, tmp_path, capsys):
    argv = ["train-tokenizer", "--config", str(ROOT / "config" / "config.yaml"), "--name", "nope",
            "--shards", str(shards), "--out", str(tmp_path / "x")]
    assert cli.main(argv) == 2
    assert "nope" in capsys.readouterr().err


def test_shard_with_non_acgt_window_names_the_file(tmp_path):
    bad = tmp_path / "shards"
    write_shard(bad / "train" / "00000.arrow", ["ACGT" * 63 + "ACGN"])
    write_shard(bad / "valid" / "00000.arrow", ["ACGT" * 64])
    with pytest.raises(InputError, match="00000.arrow"):
        train_vq_tokenizer(tiny_model(), settings(batch_size=1, max_steps=1), bad, tmp_path / "o",
                           work_dir=tmp_path / "w", seed=0, device="cpu", progress=False)
    assert not (tmp_path / "o").exists()


def test_missing_shards_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no shards"):
        train_vq_tokenizer(tiny_model(), settings(), tmp_path / "none", tmp_path / "o",
                           work_dir=tmp_path / "w", seed=0, device="cpu", progress=False)


def test_checkpoint_of_another_model_is_not_resumed(shards, tmp_path):
    s = settings(batch_size=4, max_steps=6, warmup_steps=2, seq_len_warmup=32, seq_len=32, checkpoint_every=2,
                 valid_windows=4)
    with pytest.raises(SimulatedKill):
        train_vq_tokenizer(tiny_model("vq"), s, shards, tmp_path / "o", work_dir=tmp_path / "w", seed=0,
                           device="cpu", progress=False, stop_at_step=3)
    assert torch.load(tmp_path / "w" / "checkpoint.pt", weights_only=False)["step"] == 2
    # the definition changed (hrq now): the old checkpoint must not be loaded into it
    metrics = train_vq_tokenizer(tiny_model("hrq"), s, shards, tmp_path / "o", work_dir=tmp_path / "w", seed=0,
                                 device="cpu", progress=False)
    assert metrics["steps"] == 6 and metrics["train_nucleotides_this_run"] == 6 * 4 * 32
