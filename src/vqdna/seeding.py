"""One place that seeds every random source a stage uses, and that turns on torch's
deterministic kernels (`seed_everything` for the CPU-bound stages, `deterministic_kernels` for
`pretrain.deterministic`)."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
# the two values torch accepts as deterministic (anything else: torch raises at the first cuBLAS
# call in strict mode); :4096:8 is also torch's default workspace on Hopper (sm90), so it costs
# no memory there
DETERMINISTIC_WORKSPACES = (":4096:8", ":16:8")


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # torch-free stages (download, shard)
        return
    torch.manual_seed(seed)
    if deterministic:
        # CPU results must repeat exactly (DESIGN: same config -> same metrics on CPU); warn_only:
        # these stages accept an op without a deterministic kernel (with a warning) over stopping
        deterministic_kernels(warn_only=True)


def deterministic_kernels(*, warn_only: bool = False) -> Callable[[], None]:
    """torch's deterministic algorithms for this process: ops with an ordered kernel use it
    (cuDNN / flash attention backward, scatter/index accumulation), cuBLAS a fixed workspace
    (CUBLAS_WORKSPACE_CONFIG, set here if unset), cuDNN no benchmark-picked algorithms, Inductor
    no timing-picked kernels. `warn_only=False`: an op that has no deterministic kernel raises
    (torch's RuntimeError names it), and SDPA's cuDNN / flash backward take their deterministic
    path - with `warn_only=True` torch keeps their non-deterministic defaults and only warns.
    CUBLAS_WORKSPACE_CONFIG must be in place before the process's first cuBLAS call: call this
    before any CUDA work (or export it). Returns a function that puts the previous settings back
    (tests, benchmarks)."""
    import torch

    fill = torch.utils.deterministic
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, os.environ.get(CUBLAS_WORKSPACE), fill.fill_uninitialized_memory)
    workspace = before[3]
    if workspace is None:
        if not warn_only and torch.cuda.is_initialized():
            log.warning("%s set after CUDA started: if cuBLAS already ran, its workspace is the default one; "
                        "export %s=%s before the process starts to be sure",
                        CUBLAS_WORKSPACE, CUBLAS_WORKSPACE, DETERMINISTIC_WORKSPACES[0])
        os.environ[CUBLAS_WORKSPACE] = DETERMINISTIC_WORKSPACES[0]
    elif workspace not in DETERMINISTIC_WORKSPACES and not warn_only:
        raise ConfigError(f"deterministic kernels need {CUBLAS_WORKSPACE} to be one of "
                          f"{' or '.join(DETERMINISTIC_WORKSPACES)} (cuBLAS's deterministic workspaces), "
                          f"the environment has {workspace!r}: unset or change it")
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.benchmark = False
    if not warn_only:
        # Deterministic mode also fills every new torch.empty with NaN, a guard against kernels
        # that read memory nobody wrote: ~10 ms of fill kernels in a 137 ms H200 step. Our
        # kernels write what they read (the CUDA resume tests compare whole runs bitwise), so
        # the strict (pretraining) mode skips the fill; the CPU stages' warn-only mode keeps it.
        fill.fill_uninitialized_memory = False

    def restore() -> None:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
        fill.fill_uninitialized_memory = before[4]
        if before[3] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = before[3]

    return restore
