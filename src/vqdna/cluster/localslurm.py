"""A throw-away one-node Slurm cluster on localhost (munged + slurmctld + slurmd).

Used by `tests/test_cluster_slurm.py` to run the pipeline through the real `sbatch`, and handy
for trying `profiles/slurm` on a workstation::

    python -m vqdna.cluster.localslurm up /tmp/myslurm     # prints `export SLURM_CONF=...`
    SLURM_CONF=/tmp/myslurm/slurm.conf snakemake --profile profiles/slurm ...
    python -m vqdna.cluster.localslurm down /tmp/myslurm

Everything lives in one directory: config, state, spool, logs, a private munge key and socket,
and two empty files that stand in for GPU devices (`gres.conf` with `AutoDetect=off`, so
`--gpus=N` requests schedule on a machine without GPUs; nothing is run on a GPU). Ports are
picked free at start, so it does not collide with a real Slurm or another test. Every daemon
runs in the foreground as a child process and is stopped by its PID; `down` reads the PIDs
from `pids.json`. Needs root (slurmd) and Debian's `slurm-wlm` + `munge`
(`ensure_installed()` runs apt-get when they are missing).

Slurm here has no slurmdbd, so no `sacct`: job records stay visible to `squeue`/`scontrol`
for `MinJobAge` (1 h), which is what the Slurm profile's `status_command: squeue` polls.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = ("slurm-wlm", "munge")


class ClusterError(RuntimeError):
    pass


def binaries_present() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in (*DAEMONS, "sbatch", "squeue", "scontrol"))


def can_install() -> bool:
    """True when we are root on a Debian/Ubuntu host with apt-get (the test's skip rule)."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def ensure_installed(timeout: float = 600) -> None:
    """apt-get install slurm-wlm and munge when their binaries are missing (root only)."""
    if binaries_present():
        return
    if not can_install():
        raise ClusterError("slurm-wlm/munge are not installed and cannot be installed (need root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=timeout,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                   check=True, env=env, timeout=timeout, stdout=subprocess.DEVNULL)
    if not binaries_present():
        raise ClusterError("apt-get install finished but slurm/munge binaries are still missing")


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    """Memory of this machine in MB, or of this container when its cgroup sets a limit."""
    total = 4096
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) // 1024
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit) // (1024 * 1024))
    except OSError:
        pass
    return total


def _cpus() -> int:
    """CPUs this process may use (affinity, and the cgroup's CPU quota in a container)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


@dataclass
class LocalSlurm:
    """One-node cluster rooted at `root`. Use as a context manager or call start()/stop()."""

    root: Path
    cpus: int = field(default_factory=_cpus)
    mem_mb: int | None = None  # RealMemory; default: 80% of this machine's
    gpus: int = 2  # fake GPU devices declared as GRES
    min_job_age: int = 3600  # seconds a finished job stays visible to squeue/scontrol
    partition: str = "debug"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.hostname = socket.gethostname().split(".")[0]
        if self.mem_mb is None:
            self.mem_mb = int(_mem_mb() * 0.8)

    # ---- paths -------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (sbatch, squeue, ...) against this cluster."""
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        for var in list(env):  # do not inherit another allocation's settings
            if var.startswith(("SLURM_JOB", "SBATCH_", "SRUN_")):
                env.pop(var)
        return env

    def log(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    # ---- configuration -----------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log", "munge", "gpu"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        gpu_files = []
        for i in range(self.gpus):
            f = r / "gpu" / f"nvidia{i}"
            f.touch()
            gpu_files.append(str(f))
        ctld_port, slurmd_port = _free_port(), _free_port()
        self.ctld_port = ctld_port
        gres_node = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        lines = [
            "# written by vqdna.cluster.localslurm: a one-node test cluster",
            "ClusterName=vqdnatest",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.sock'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log('slurmctld')}",
            f"SlurmdLogFile={self.log('slurmd')}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "SchedulerType=sched/backfill",
            f"DefMemPerCPU={max(100, (self.mem_mb or 2000) // max(1, self.cpus) // 4)}",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            f"MinJobAge={self.min_job_age}",
            "KillWait=5",
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.mem_mb}{gres_node} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        gres = ["AutoDetect=off"] + [f"NodeName={self.hostname} Name=gpu File={f}" for f in gpu_files]
        (r / "gres.conf").write_text("\n".join(gres) + "\n")
        # slurmd/slurmctld read cgroup.conf only for cgroup plugins; keep the folder self-contained.

    # ---- daemons -------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        out.close()
        self._save_pids()

    def _save_pids(self) -> None:
        (self.root / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def start(self, timeout: float = 60) -> "LocalSlurm":
        if os.geteuid() != 0:
            raise ClusterError("a local slurmd needs root")
        ensure_installed()
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        m = self.root / "munge"
        try:
            self._spawn("munged", [
                _sbin("munged"), "--foreground", "--force",
                f"--socket={m / 'munge.sock'}", f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}", f"--log-file={self.log('munged')}",
                f"--seed-file={m / 'munged.seed'}",
            ])
            self._wait(lambda: (m / "munge.sock").exists(), timeout, "munged socket")
            self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait(self._ctld_up, timeout, "slurmctld")
            self._link_conf()
            self._spawn("slurmd", [_sbin("slurmd"), "-D", "-f", str(self.conf)])
            self._wait(self._node_idle, timeout, "node idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _link_conf(self) -> None:
        """Client commands inside jobs must find this config without SLURM_CONF: the Slurm
        plugin's job step strips SLURM_* variables before it calls `srun`. Slurm clients then
        read /run/slurm/conf/slurm.conf (where a configless slurmd caches its config), so link
        that folder here. Refuses to replace a folder or link that is not ours."""
        if Path("/etc/slurm/slurm.conf").exists():
            raise ClusterError("/etc/slurm/slurm.conf exists: job steps would talk to that cluster, not this test one")
        if RUN_CONF.is_symlink():
            target = Path(os.readlink(RUN_CONF))
            if (target / "slurm.conf").exists() and target != self.root:
                raise ClusterError(f"{RUN_CONF} links to another live cluster config ({target})")
            RUN_CONF.unlink()
        elif RUN_CONF.exists():
            raise ClusterError(f"{RUN_CONF} exists (a configless slurmd runs here?); not replacing it")
        RUN_CONF.parent.mkdir(parents=True, exist_ok=True)
        RUN_CONF.symlink_to(self.root, target_is_directory=True)

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise ClusterError(f"{name} exited with {p.returncode}; see {self.root / 'log'}:\n"
                                   + self.tail_logs())

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if cond():
                return
            time.sleep(0.3)
        raise ClusterError(f"timed out waiting for {what}\n" + self.tail_logs())

    def _run(self, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def _ctld_up(self) -> bool:
        return self._run("scontrol", "ping").returncode == 0 and "UP" in self._run("scontrol", "ping").stdout

    def _node_idle(self) -> bool:
        out = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip().lower()
        return out.startswith("idle")

    def stop(self, timeout: float = 20) -> dict[str, int | None]:
        """Stop every daemon this object started, by PID (slurmd, slurmctld, munged). Returns
        their exit codes. Jobs still running are cancelled first."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self._run("scancel", "--full", "-u", str(os.getuid()), timeout=10)
            except Exception:  # noqa: BLE001 - best effort before shutdown
                pass
        codes: dict[str, int | None] = {}
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            codes[name] = p.returncode
        self.procs.clear()
        self._save_pids()
        _remove_conf_link(self.root)
        return codes

    def tail_logs(self, n: int = 30) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # ---- scheduler records ---------------------------------------------------
    def job_records(self) -> list[dict[str, str]]:
        """Every job slurmctld still remembers (MinJobAge), as `scontrol show job -o` fields."""
        out = self._run("scontrol", "show", "job", "-o", "--details").stdout
        jobs = []
        for line in out.splitlines():
            if not line.startswith("JobId="):
                continue
            rec: dict[str, str] = {}
            # values may contain spaces only in Command/WorkDir-like fields at the end; split on
            # " Key=" boundaries
            for tok in _split_fields(line):
                k, _, v = tok.partition("=")
                rec[k] = v.strip()
            jobs.append(rec)
        return jobs

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _split_fields(line: str) -> list[str]:
    import re

    parts = re.split(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)", line.strip())
    return [p for p in parts if "=" in p]


RUN_CONF = Path("/run/slurm/conf")


def _remove_conf_link(root: Path) -> None:
    """slurmd (configless) links /run/slurm/conf to its cache; drop it if it is ours."""
    try:
        if RUN_CONF.is_symlink() and str(Path(os.readlink(RUN_CONF))).startswith(str(root)):
            RUN_CONF.unlink()
    except OSError:
        pass


def stop_pids(root: Path, timeout: float = 20) -> None:
    """Stop the daemons recorded in `<root>/pids.json` (the `down` command)."""
    pids = json.loads((Path(root) / "pids.json").read_text())
    for name in ("slurmd", "slurmctld", "munged"):
        pid = pids.get(name)
        if not pid:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
    (Path(root) / "pids.json").write_text("{}")
    _remove_conf_link(Path(root).resolve())


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vqdna.cluster.localslurm", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("root", type=Path)
    p.add_argument("--gpus", type=int, default=2)
    a = p.parse_args(argv)
    if a.action == "up":
        cluster = LocalSlurm(a.root, gpus=a.gpus)
        cluster.start()
        # leave the daemons running: detach from them
        cluster.procs.clear()
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    stop_pids(a.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
