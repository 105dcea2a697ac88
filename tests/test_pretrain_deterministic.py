"""`pretrain.deterministic`: validated, recorded with the run's parameters, torch's deterministic
kernels (strict) on for the job and the previous settings back after it, a clear error for a
conflicting cuBLAS workspace or an op without a deterministic kernel, and a killed CPU job with
it on resumes bitwise. The CUDA side: tests/test_pretrain_graph_resume.py."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from test_tokens_data import tiny_token_dir
from vqdna.config import load_config
from vqdna.errors import ConfigError
from vqdna.models import pretrain as pretrain_module
from vqdna.models.pretrain import pretrain
from vqdna.seeding import CUBLAS_WORKSPACE, seed_everything

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "config.yaml"
CFG = {
    "device": "cpu", "seed": 0, "tokens": {"batch_nt": 1 << 14},
    "pretrain": {"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
                 "max_len": 32, "steps": 6, "batch_size": 16, "micro_batch_size": 8, "lr": 3e-3, "warmup_steps": 2,
                 "log_every": 1, "checkpoint_every": 3, "eval_batches": 1, "cpu_threads": 1, "deterministic": True},
}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return tiny_token_dir(tmp_path_factory.mktemp("deterministic"), 128, train_rows=32, train_shards=1,
                          valid_rows=16, valid_offset=100, cfg=CFG)


@pytest.fixture(autouse=True)
def torch_kernel_settings(monkeypatch):
    """Each test starts in torch's default mode without CUBLAS_WORKSPACE_CONFIG; whatever a test
    leaves behind is undone."""
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def settings_during_steps(monkeypatch) -> list[tuple]:
    """(deterministic algorithms on, warn-only, CUBLAS_WORKSPACE_CONFIG, NaN fill of new tensors)
    at every training step."""
    seen = []
    real_call = pretrain_module.TrainStep.__call__

    def recording_call(self, *args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                     os.environ.get(CUBLAS_WORKSPACE), torch.utils.deterministic.fill_uninitialized_memory))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(pretrain_module.TrainStep, "__call__", recording_call)
    return seen


def test_shipped_configs_set_the_key_and_a_non_boolean_is_refused():
    for name in ("config.yaml", "paper.yaml"):
        assert isinstance(load_config([ROOT / "config" / name])["pretrain"]["deterministic"], bool)
    with pytest.raises(ConfigError, match="pretrain.deterministic"):
        load_config([DEMO], ["pretrain.deterministic=sometimes"])


def test_cli_job_runs_strict_deterministic_records_the_key_and_restores(tokens, tmp_path, monkeypatch):
    import json

    from vqdna.cli import main
    from vqdna.tracking import get_client

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen = settings_during_steps(monkeypatch)
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
                                   "pretrain": {**CFG["pretrain"], "steps": 2}}))
    rc = main(["pretrain", "--config", str(DEMO), "--config", str(overlay), "--tokens", str(tokens / "tokens"),
               "--tokenizer", str(tokens / "tok"), "--out", str(tmp_path / "model")])
    assert rc == 0
    # strict mode, cuBLAS's deterministic workspace, no NaN fill (its cost on a GPU: docs/benchmarks.md)
    assert seen == [(True, False, ":4096:8", False)] * 2
    assert not torch.are_deterministic_algorithms_enabled() and CUBLAS_WORKSPACE not in os.environ
    assert torch.utils.deterministic.fill_uninitialized_memory  # torch's default, put back

    cfg = load_config([DEMO, overlay])
    client = get_client(cfg)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.params["pretrain.deterministic"] for r in runs] == ["True"]


def test_off_leaves_torch_as_it_is(tokens, monkeypatch):
    seen = settings_during_steps(monkeypatch)
    cfg = copy.deepcopy(CFG)
    cfg["pretrain"].update(deterministic=False, steps=1)
    pretrain(tokens / "tokens", tokens / "tok", tokens / "off", cfg, track=False)
    assert seen == [(False, False, None, True)]


def test_killed_cpu_job_with_it_on_resumes_bitwise(tokens):
    from safetensors.torch import load_file

    whole, resumed = tokens / "whole", tokens / "resumed"
    whole_metrics = pretrain(tokens / "tokens", tokens / "tok", whole, CFG, track=False)
    pretrain(tokens / "tokens", tokens / "tok", resumed, CFG, track=False, stop_after=3)
    assert not resumed.exists() and (tokens / "resumed.ckpt" / "last.pt").exists()
    resumed_metrics = pretrain(tokens / "tokens", tokens / "tok", resumed, CFG, track=False)
    assert resumed_metrics["resumed_from_step"] == 3
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("loss", "eval_loss", "eval_masked_acc_level0", "eval_masked_acc_level1"):
        assert whole_metrics[key] == resumed_metrics[key], key


def test_conflicting_cublas_workspace_is_a_config_error_before_training(tokens, monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":0:0")
    with pytest.raises(ConfigError, match=r"CUBLAS_WORKSPACE_CONFIG to be one of :4096:8 or :16:8.*':0:0'"):
        pretrain(tokens / "tokens", tokens / "tok", tokens / "conflict", CFG, track=False)
    assert not (tokens / "conflict").exists() and not (tokens / "conflict.ckpt").exists()
    assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":16:8")  # the other deterministic workspace is respected
    seen = settings_during_steps(monkeypatch)
    cfg = copy.deepcopy(CFG)
    cfg["pretrain"]["steps"] = 1
    pretrain(tokens / "tokens", tokens / "tok", tokens / "ws16", cfg, track=False)
    assert seen == [(True, False, ":16:8", False)] and os.environ[CUBLAS_WORKSPACE] == ":16:8"


def test_op_without_deterministic_kernel_stops_the_job_naming_it(tokens, monkeypatch):
    """put_ without accumulation has no deterministic kernel (on the CPU too): an op like it in the
    step is an error that says which op and what to do, not a warning."""
    real_call = pretrain_module.TrainStep.__call__

    def step_with_put(self, *args, **kwargs):
        torch.zeros(4).put_(torch.tensor([1]), torch.ones(1))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(pretrain_module.TrainStep, "__call__", step_with_put)
    with pytest.raises(ConfigError, match=r"pretrain.deterministic is on.*\(put_ does not have a deterministic "
                                          r"implementation.*pretrain.deterministic: false"):
        pretrain(tokens / "tokens", tokens / "tok", tokens / "put", CFG, track=False)
    assert not torch.are_deterministic_algorithms_enabled()
    cfg = copy.deepcopy(CFG)
    cfg["pretrain"].update(deterministic=False, steps=1)  # torch's default mode lets it through
    pretrain(tokens / "tokens", tokens / "tok", tokens / "put_off", cfg, track=False)


def test_seed_everything_stays_warn_only_and_keeps_any_workspace(monkeypatch):
    """The other stages' seeding is unchanged: warn-only, and a CUBLAS_WORKSPACE_CONFIG of the
    user's is kept (set only where unset)."""
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":0:0")
    seed_everything(3)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory  # warn-only keeps torch's NaN fill
    assert os.environ[CUBLAS_WORKSPACE] == ":0:0"
    monkeypatch.delenv(CUBLAS_WORKSPACE)
    seed_everything(3)
    assert os.environ[CUBLAS_WORKSPACE] == ":4096:8"
