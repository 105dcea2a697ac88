"""`vqdna mlflow-server`: one MLflow tracking server for a team or a cluster.

    vqdna mlflow-server --config config/paper.yaml          # settings from cluster.mlflow_server
    export MLFLOW_TRACKING_URI=http://<this host>:5000       # in the shell that runs snakemake
    snakemake --profile slurm all --configfile config/paper.yaml

Runs `mlflow server` with a sqlite (or PostgreSQL) backend store and an artifact root on shared
storage that the server proxies (`--serve-artifacts`), so Slurm jobs only need HTTP access to
the server, not to the artifact folder. Jobs log to it because `vqdna.tracking` honours
MLFLOW_TRACKING_URI (Slurm jobs inherit the submitting shell's environment), or set
`tracking.uri: http://host:5000` in the config.

With sqlite the store's tables are created once here, before the server's workers start (a fresh
database opened by several workers at once races on the migration).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Mapping

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 5000,
    "backend_store_uri": "sqlite:///results/mlflow-server/mlflow.db",
    "artifacts_destination": "results/mlflow-server/artifacts",
    "workers": 2,
}


def settings(cfg: Mapping | None, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """cluster.mlflow_server from the config over DEFAULTS, command-line flags over both."""
    out = dict(DEFAULTS)
    out.update({k: v for k, v in (((cfg or {}).get("cluster") or {}).get("mlflow_server") or {}).items()
                if v is not None})
    if args is not None:
        for key in DEFAULTS:
            val = getattr(args, key, None)
            if val is not None:
                out[key] = val
    return out


def _abs_sqlite(uri: str) -> str:
    """sqlite:///relative/path -> sqlite:////abs/path (the server may run from another cwd)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        return f"sqlite:///{path}"
    return uri


def _abs_dest(dest: str) -> str:
    return dest if "://" in dest else str(Path(dest).resolve())


def prepare(s: dict[str, Any]) -> dict[str, Any]:
    """Absolute paths, folders created, sqlite schema created once."""
    s = dict(s)
    s["backend_store_uri"] = _abs_sqlite(str(s["backend_store_uri"]))
    s["artifacts_destination"] = _abs_dest(str(s["artifacts_destination"]))
    if "://" not in str(s["artifacts_destination"]):
        Path(s["artifacts_destination"]).mkdir(parents=True, exist_ok=True)
    uri = s["backend_store_uri"]
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    init_store(uri, s["artifacts_destination"])
    return s


def init_store(uri: str, artifact_root: str) -> None:
    """Create (or migrate) the tracking tables of a database store once, in this process."""
    if not uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, artifact_root)
    store.engine.dispose()


def command(s: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", str(s["backend_store_uri"]),
        "--serve-artifacts", "--artifacts-destination", str(s["artifacts_destination"]),
        "--host", str(s["host"]), "--port", str(s["port"]),
        "--workers", str(s["workers"]),
    ]
    if s.get("allowed_hosts"):
        cmd += ["--allowed-hosts", str(s["allowed_hosts"])]
    return cmd + list(extra or [])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="interface to bind (default: cluster.mlflow_server.host)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--backend-store-uri", dest="backend_store_uri", default=None,
                        help="sqlite:///path or postgresql://user@host/db")
    parser.add_argument("--artifacts-destination", dest="artifacts_destination", default=None,
                        help="artifact root on shared storage (path or s3://...)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--allowed-hosts", dest="allowed_hosts", default=None,
                        help="Host headers to accept besides localhost/private IPs, e.g. 'login01:5000'")
    parser.add_argument("--dry-run", action="store_true", help="print the mlflow command and exit")
    parser.add_argument("extra", nargs="*", help="further `mlflow server` options after --")


def run(args: argparse.Namespace, cfg) -> int:
    s = settings(cfg, args)
    s["allowed_hosts"] = args.allowed_hosts
    if args.dry_run:
        s["backend_store_uri"] = _abs_sqlite(str(s["backend_store_uri"]))
        s["artifacts_destination"] = _abs_dest(str(s["artifacts_destination"]))
        print(shlex.join(command(s, args.extra)))
        return 0
    s = prepare(s)
    shown = socket.getfqdn() if s["host"] in ("0.0.0.0", "::") else s["host"]
    print(f"MLflow server: backend {s['backend_store_uri']}, artifacts {s['artifacts_destination']}\n"
          f"point the pipeline at it with:  export MLFLOW_TRACKING_URI=http://{shown}:{s['port']}",
          file=sys.stderr, flush=True)
    cmd = command(s, args.extra)
    os.execv(cmd[0], cmd)  # the server takes this process's PID (stop it by that PID)
    return 127  # not reached
