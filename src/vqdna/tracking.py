"""MLflow tracking shared by every stage: one experiment per pipeline, one run per job.

Usage::

    with start_run(cfg, stage="pretrain", name="pretrain/hrq", params={...}) as run:
        run.log_metrics({"loss": 1.2}, step=10)
        run.log_artifact("results/pretrain/hrq/config.json")

The tracking URI comes from `MLFLOW_TRACKING_URI` when set (a team server), otherwise
from `tracking.uri` in the config (default `sqlite:///results/mlflow.db`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow limits a param value to 6000 characters; longer values are cut, not fatal.
_MAX_PARAM_LEN = 6000


def tracking_uri(cfg: Mapping | None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg and cfg.get("tracking", {}).get("uri"):
        return cfg["tracking"]["uri"]
    return "sqlite:///results/mlflow.db"


def _ensure_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def with_retries(fn: Callable[[], T], *, what: str, attempts: int = 8) -> T:
    """Retry store operations that fail transiently when many jobs share one sqlite store."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - MLflow wraps sqlite/HTTP errors in many types
            text = str(exc).lower()
            transient = any(s in text for s in ("locked", "busy", "timeout", "temporarily", "connection", "already exists"))
            if not transient or i == attempts - 1:
                raise
            log.debug("retrying %s after %s", what, exc)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Run:
    """A thin handle over one MLflow run, with retries on every write."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            chunk = items[i:i + 100]
            with_retries(lambda: self.client.log_batch(self.run_id, params=chunk), what="log_params")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in flatten(metrics).items() if v is not None]
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            with_retries(lambda: self.client.log_batch(self.run_id, metrics=chunk), what="log_metrics")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        with_retries(lambda: self.client.log_batch(self.run_id, tags=items), what="set_tags")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            with_retries(lambda: self.client.log_artifacts(self.run_id, str(path), artifact_path), what="log_artifacts")
        else:
            with_retries(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), what="log_artifact")

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        with_retries(lambda: self.client.log_dict(self.run_id, obj, artifact_file), what="log_dict")


def get_client(cfg: Mapping | None):
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    _ensure_sqlite_dir(uri)
    if uri.startswith("sqlite:"):
        # Import the SQL store before taking the lock: its import (SQLAlchemy, MLflow's ORM
        # models, alembic) is most of the client's start-up, and parallel jobs need not queue
        # behind each other for it; only opening (and, for a fresh file, migrating) the store must.
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    with _sqlite_init_lock(uri):
        client = with_retries(lambda: MlflowClient(tracking_uri=uri), what="connect")
        # open the store now, under the lock: parallel jobs creating a fresh sqlite store race
        # in its schema migration (alembic "expected to match one row")
        with_retries(lambda: client.search_experiments(max_results=1), what="open store")
    return client


@contextlib.contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(uri[len("sqlite:///"):] + ".init-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_id(client, cfg: Mapping | None) -> str:
    tcfg = (cfg or {}).get("tracking", {})
    name = tcfg.get("experiment", "vqdna")
    artifact_location = tcfg.get("artifact_location")

    def get_or_create() -> str:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # created by a concurrent job between the two calls
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    return with_retries(get_or_create, what="experiment")


@contextlib.contextmanager
def start_run(
    cfg: Mapping | None,
    *,
    stage: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """Open one MLflow run for one job; it ends FINISHED, or FAILED if the block raises."""
    client = get_client(cfg)
    exp_id = experiment_id(client, cfg)
    all_tags = {"vqdna.stage": stage, "mlflow.runName": name}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if os.environ.get("SLURM_JOB_ID"):
        all_tags["slurm.job_id"] = os.environ["SLURM_JOB_ID"]
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    mlrun = with_retries(lambda: client.create_run(exp_id, run_name=name, tags=all_tags), what="create_run")
    run = Run(client, mlrun.info.run_id, exp_id)
    if params:
        run.log_params(params)
    status = "FINISHED"
    try:
        yield run
    except BaseException:
        status = "FAILED"
        raise
    finally:
        with_retries(lambda: client.set_terminated(run.run_id, status=status), what="set_terminated")
