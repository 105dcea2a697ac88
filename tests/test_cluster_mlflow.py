"""MLflow for a team: many jobs logging at once to one store lose no run.

N processes start together and each logs one run (params, a metric series, an artifact) through
`vqdna.tracking.start_run`, first into one fresh sqlite store, then through a real
`vqdna mlflow-server` (sqlite backend, proxied artifact root) on 127.0.0.1. All N runs must be
present, FINISHED, with every metric value.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

N = 8
STEPS = 5


def _job(i: int, uri: str, workdir: str, barrier) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(workdir)
    from vqdna.tracking import start_run

    cfg = {"tracking": {"uri": "sqlite:///ignored-because-env-wins.db", "experiment": "team", "artifact_location": None}}
    barrier.wait(timeout=120)  # all N hit the store at the same moment
    with start_run(cfg, stage="finetune", name=f"job{i}", params={"job": i, "grid": {"lr": 1e-4 * (i + 1)}},
                   tags={"dataset": f"d{i}"}) as run:
        for step in range(STEPS):
            run.log_metrics({"loss": float(i * 100 + step)}, step=step)
        art = Path(workdir) / f"out{i}.txt"
        art.write_text(f"job {i}\n")
        run.log_artifact(art)
        run.log_metrics({"test": {"mcc": i / 10}})


def _fan_out(uri: str, workdir: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N)
    procs = [ctx.Process(target=_job, args=(i, uri, str(workdir), barrier)) for i in range(N)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    codes = [p.exitcode for p in procs]
    assert codes == [0] * N, f"some logging processes failed: {codes}"


def _check(uri: str, *, artifacts: bool) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("team")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == N, f"{len(runs)} of {N} runs in the store"
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == sorted(f"job{i}" for i in range(N))
    for i in range(N):
        r = by_name[f"job{i}"]
        assert r.info.status == "FINISHED"
        assert r.data.params["job"] == str(i) and r.data.params["grid.lr"] == str(1e-4 * (i + 1))
        assert r.data.tags["vqdna.stage"] == "finetune"
        history = client.get_metric_history(r.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(s, float(i * 100 + s)) for s in range(STEPS)]
        assert r.data.metrics["test.mcc"] == pytest.approx(i / 10)
        if artifacts:
            assert [a.path for a in client.list_artifacts(r.info.run_id)] == [f"out{i}.txt"]


def test_parallel_jobs_one_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # fresh: the schema is created under contention
    _fan_out(uri, tmp_path)
    _check(uri, artifacts=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parallel_jobs_through_mlflow_server(tmp_path):
    port = _free_port()
    shared = tmp_path / "shared"
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "vqdna", "mlflow-server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{shared / 'mlflow.db'}",
         "--artifacts-destination", str(shared / "artifacts"), "--workers", "2"],
        cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not come up\n" + (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        work = tmp_path / "jobs"
        work.mkdir()
        _fan_out(uri, work)
        _check(uri, artifacts=True)
        # artifacts went through the server to the shared artifact root
        stored = sorted(p.name for p in (shared / "artifacts").rglob("out*.txt"))
        assert stored == sorted(f"out{i}.txt" for i in range(N))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def test_mlflow_server_command_from_config(tmp_path, capsys):
    from vqdna.cli import main

    rc = main(["mlflow-server", "--config", str(Path(__file__).resolve().parents[1] / "config" / "paper.yaml"),
               "--port", "5123", "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "--port 5123" in out and "--host 0.0.0.0" in out and "--serve-artifacts" in out
    assert "--backend-store-uri sqlite:////" in out  # made absolute
