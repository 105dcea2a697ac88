"""The Slurm profile against a real Slurm: a one-node cluster on localhost (munged, slurmctld,
slurmd from Debian's slurm-wlm, installed with apt-get when missing), jobs submitted through
`sbatch` by snakemake-executor-plugin-slurm, checked in the scheduler's own records.

What runs (a few minutes on 2 cores):
- a small workflow through `snakemake --profile slurm all` (the profile *name*, installed with
  `vqdna install-profile`): a GPU rule gets `--gpus=1` from the GRES, a failing job shows up as
  FAILED with its log path, and the re-run resubmits only what failed;
- the demo pipeline (default: download + shard + two tokenizers, i.e. train-tokenizer) through
  `--profile profiles/slurm` with the demo config narrowed to two of its genomes (lambda, FASTA;
  the Arabidopsis chloroplast, GenBank) and 2 train + 1 valid shards, so every rule of those
  stages runs as Slurm jobs (12 in all) in a few minutes: a first part, then the rest (resume:
  nothing of the first part is resubmitted), during which one train_tokenizer job is cancelled
  while it runs (preemption): reported failed (CANCELLED) with its log path, and the next run
  submits only it. Every job is a completed batch job in slurmctld's records and log; the outputs
  equal a local run of the same targets and config (shards and tokenizers byte for byte; see
  _normalise for genome metadata).
Every daemon is stopped by PID at the end.

Widen the pipeline part with VQDNA_SLURM_GENOMES (`all`: the five demo genomes and the demo's
shard counts), VQDNA_SLURM_TARGETS (files, or `all`), VQDNA_SLURM_FIRST, VQDNA_SLURM_CANCEL_RULE,
VQDNA_SLURM_COMPARE, e.g. `VQDNA_SLURM_GENOMES=all VQDNA_SLURM_TARGETS=all pytest -m slurm`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vqdna.cluster import localslurm

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1200)]

# The pipeline part (override by environment to widen it, e.g. VQDNA_SLURM_TARGETS=all):
# targets of the whole run; default download + shard + two cheap tokenizers
TARGETS = os.environ.get(
    "VQDNA_SLURM_TARGETS",
    "results/shards/manifest.json results/tokenizers/onehot/metrics.json results/tokenizers/kmer6/metrics.json",
).split()
# run alone first, so that the full run must resume after it
FIRST = os.environ.get("VQDNA_SLURM_FIRST", "resources/genomes/manifest.tsv").split()
# a job of this rule is cancelled while it runs (preemption) and must be redone alone
CANCEL_RULE = os.environ.get("VQDNA_SLURM_CANCEL_RULE", "train_tokenizer")
# outputs that must be byte-identical between the Slurm run and the local run
COMPARE = os.environ.get(
    "VQDNA_SLURM_COMPARE",
    "resources/genomes/* results/shards/* results/shards/*/* results/tokenizers/*/*",
).split()
# demo genomes of the run (accessions, or `all` for the demo's five and its shard counts)
GENOMES = os.environ.get("VQDNA_SLURM_GENOMES", "NC_001416.1 NC_000932.1").split()
# never compared: logs, tracking store, Snakemake's own state, the resolved config
IGNORE = ["logs/*", "results/mlflow*", ".snakemake/*", "results/config.resolved.json", "mlruns/*"]

SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "a local slurmd needs root"
    if not localslurm.binaries_present() and not localslurm.can_install():
        return "slurm-wlm/munge missing and apt-get unavailable"
    return None


if _skip_reason():
    pytestmark.append(pytest.mark.skip(reason=_skip_reason()))


# ---- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # short path: munge's socket path must fit in sockaddr_un
    root = Path(tmp_path_factory.mktemp("slurm"))
    c = localslurm.LocalSlurm(root, gpus=2)
    c.start()
    pids = {n: p.pid for n, p in c.procs.items()}
    try:
        yield c
    finally:
        codes = c.stop()
        # every daemon we started is gone, stopped by its PID
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"{name} (pid {pid}) still running"
        assert set(codes) == set(pids)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.fixture
def xdg(tmp_path_factory):
    """A private user config folder (one per test: each installs the profiles by name itself)."""
    return Path(tmp_path_factory.mktemp("xdg"))


def _env(cluster, xdg: Path) -> dict[str, str]:
    env = cluster.env
    env["XDG_CONFIG_HOME"] = str(xdg)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def copy_repo(dest: Path) -> Path:
    """The repo's files as git sees them (tracked + untracked-not-ignored): no results, no venv."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        d = dest / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            d.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, d)
    return dest


def snakemake(args: list[str], cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    p.log = f"$ {' '.join(cmd)}  (cwd {cwd})\n--- stdout\n{p.stdout[-6000:]}\n--- stderr\n{p.stderr[-12000:]}"
    return p


# test settings on top of the profile: poll Slurm sooner, fail fast. The plugin waits this long
# for the first status check, and 10 s more for each further one until a job finishes (then
# again this long); the jobs here take 10-30 s, so 10 s finds most at the 1st or 2nd check.
FAST = ["--slurm-init-seconds-before-status-checks", "10", "--latency-wait", "5", "--retries", "0"]


def submitted(p) -> dict[str, str]:
    """{slurm job id: log path} for every sbatch the plugin made in this run."""
    return dict(SUBMITTED.findall(p.stdout + p.stderr))


# ---- a small workflow: GPU request, a failing job, resume ------------------------------
SMALL = '''
FLAG = "allow_b"

rule all:
    input: "b.txt", "gpu.txt"

rule a:
    output: "a.txt"
    resources: mem_mb=200, runtime=5
    shell: "echo a > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    resources: mem_mb=200, runtime=5
    shell: "test -e " + FLAG + " || {{ echo 'injected failure of rule b' >&2; exit 3; }}; cat {input} > {output}"

rule gpu:
    output: "gpu.txt"
    resources: mem_mb=200, runtime=5, gpu=1
    shell: "echo SLURM_GPUS_ON_NODE=$SLURM_GPUS_ON_NODE > {output}"
'''


def test_profile_by_name_gpu_failure_and_resume(cluster, xdg, tmp_path):
    env = _env(cluster, xdg)
    # `vqdna install-profile` from the repo root puts the profiles where Snakemake looks names up
    p = subprocess.run([sys.executable, "-m", "vqdna", "install-profile"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (xdg / "snakemake" / "slurm" / "config.yaml").is_file()

    wf = tmp_path / "small"
    wf.mkdir()
    (wf / "Snakefile").write_text(SMALL)

    # 1st run: rule b fails (exit 3) -> reported failed with its Slurm log; a and gpu succeed
    first = snakemake(["--profile", "slurm", "all", *FAST], wf, env)
    assert first.returncode != 0, first.log
    jobs1 = submitted(first)
    assert len(jobs1) == 3, first.log
    recs = {r["JobId"]: r for r in cluster.job_records()}
    by_rule = {recs[j]["Comment"]: j for j in jobs1}
    assert set(by_rule) == {"rule_a", "rule_b", "rule_gpu"}, by_rule
    for j in jobs1:
        assert recs[j]["BatchFlag"] == "1"  # went through sbatch
        assert recs[j]["WorkDir"] == str(wf)
    failed = by_rule["rule_b"]
    assert recs[failed]["JobState"] == "FAILED", recs[failed]
    assert recs[failed]["ExitCode"].split(":")[0] != "0"
    assert recs[by_rule["rule_a"]]["JobState"] == "COMPLETED"
    err = first.stdout + first.stderr
    assert f"SLURM-job '{failed}' failed" in err, first.log
    log_path = jobs1[failed]
    assert log_path in err.split(f"SLURM-job '{failed}' failed", 1)[1], "log path not shown with the failure"
    assert "injected failure of rule b" in Path(log_path).read_text()
    # the GPU rule asked Slurm for one GPU and got it
    gpu = recs[by_rule["rule_gpu"]]
    assert "gpu:1" in gpu.get("TresPerJob", "") + gpu.get("JOB_GRES", ""), gpu
    assert (wf / "gpu.txt").read_text().strip() == "SLURM_GPUS_ON_NODE=1"
    assert not (wf / "b.txt").exists()

    # 2nd run after the fix: only b is submitted (a and gpu are done)
    (wf / "allow_b").touch()
    second = snakemake(["--profile", "slurm", "all", *FAST], wf, env)
    assert second.returncode == 0, second.log
    jobs2 = submitted(second)
    recs = {r["JobId"]: r for r in cluster.job_records()}
    assert [recs[j]["Comment"] for j in jobs2] == ["rule_b"], second.log
    assert recs[next(iter(jobs2))]["JobState"] == "COMPLETED"
    assert (wf / "b.txt").read_text() == "a\n"


# ---- the demo pipeline through profiles/slurm -------------------------------------------
# Bytes that are not content, normalised before comparing (everything else byte for byte):
# - a gzip member's header (it may carry the name of the temporary file it was written to):
#   .gz files are compared by their decompressed payload;
# - in JSON/TSV metadata: wall-clock timings (VOLATILE_KEYS) and the checksum/size of such a
#   .gz file (sha256, bytes), whose payload is compared instead.
VOLATILE_KEYS = {"seconds"}
GZ_META_KEYS = {"sha256", "bytes"}


def _normalise(rel: str, data: bytes) -> bytes:
    import gzip
    import json

    if rel.endswith(".gz"):
        return gzip.decompress(data)
    if rel.startswith("resources/genomes/") and rel.endswith(".json"):
        obj = json.loads(data)
        drop = VOLATILE_KEYS | (GZ_META_KEYS if str(obj.get("file", "")).endswith(".gz") else set())
        return json.dumps({k: v for k, v in obj.items() if k not in drop}, sort_keys=True).encode()
    if rel.startswith("resources/genomes/") and rel.endswith(".tsv"):
        rows = [line.split("\t") for line in data.decode().splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if name not in GZ_META_KEYS | VOLATILE_KEYS]
        return "\n".join("\t".join(r[i] for i in keep) for r in rows).encode()
    if rel.endswith(".json"):
        obj = json.loads(data)
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k not in VOLATILE_KEYS}
        return json.dumps(obj, sort_keys=True).encode()
    return data


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in IGNORE):
            continue
        if any(fnmatch.fnmatch(rel, pat) for pat in COMPARE):
            out[rel] = f.read_bytes()
    return out


def _rule_of(rec: dict[str, str]) -> str:
    return rec["Comment"].split("_wildcards_")[0]


EXTRA_CONFIG = """# test: one pipeline stage asks for a GPU so the profile's --gpus path is exercised
cluster:
  resources:
    train-tokenizer: {gpu: 1}
"""
# the demo narrowed to GENOMES: fewer download/prepare/write jobs, same rules and code paths
NARROW_CONFIG = """genomes:
  table: config/genomes.slurmtest.tsv
shards:
  num_shards: {train: 2, valid: 1}
  split: {by: block, block_size: 2000, valid_fraction: 0.2, seed: 0}
"""


def _write_test_config(repo: Path) -> None:
    extra = EXTRA_CONFIG
    if GENOMES != ["all"]:
        table = (repo / "config" / "genomes.demo.tsv").read_text().splitlines()
        keep = [ln for ln in table if ln.startswith(("#", "accession\t")) or ln.split("\t", 1)[0] in GENOMES]
        assert len(keep) == len([ln for ln in keep if ln.startswith("#")]) + 1 + len(GENOMES), GENOMES
        (repo / "config" / "genomes.slurmtest.tsv").write_text("\n".join(keep) + "\n")
        extra += NARROW_CONFIG
    (repo / "test-extra.yaml").write_text(extra)


def test_demo_pipeline_through_slurm_profile(cluster, xdg, tmp_path):
    local = copy_repo(tmp_path / "local")
    onslurm = copy_repo(tmp_path / "slurm")
    for repo in (local, onslurm):
        _write_test_config(repo)
    # last on every command line: --configfile takes all words after it
    cfg = ["--configfile", "config/config.yaml", "test-extra.yaml"]
    env_local, env = _env(cluster, xdg), _env(cluster, xdg)
    # jobs import the package of their own copy (not the install's, which may differ)
    env_local["PYTHONPATH"] = str(local / "src")
    env["PYTHONPATH"] = str(onslurm / "src")

    # the reference: the same targets on this machine through profiles/local, in its own copy,
    # run while the Slurm runs below wait on the scheduler (it is checked before the comparison)
    t0 = time.monotonic()
    ref_args = [sys.executable, "-m", "snakemake", *FIRST, *TARGETS, "--profile", "profiles/local", "--cores", "2",
                *cfg]
    ref_log = tmp_path / "local-reference.log"
    with open(ref_log, "w") as fh:
        ref = subprocess.Popen(ref_args, cwd=local, env=env_local, stdout=fh, stderr=subprocess.STDOUT)
    try:
        _slurm_runs(cluster, xdg, onslurm, env, cfg, t0)
        ref.wait(timeout=900)
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
    assert ref.returncode == 0, f"$ {' '.join(ref_args)}  (cwd {local})\n" + ref_log.read_text()[-12000:]
    print(f"[{time.monotonic() - t0:.0f}s] local reference run done")

    # the outputs equal the local run's, byte for byte
    a, b = _files(local), _files(onslurm)
    assert a, f"nothing to compare under {COMPARE} in the local run"
    assert set(a) == set(b), f"only local: {sorted(set(a) - set(b))}; only Slurm: {sorted(set(b) - set(a))}"
    differ = [k for k in a if _normalise(k, a[k]) != _normalise(k, b[k])]
    assert not differ, f"files differ between the local and the Slurm run: {differ}"
    # shards and tokenizers: byte for byte, no normalisation
    strict = [k for k in a if k.startswith(("results/shards/", "results/tokenizers/")) and a[k] != b[k]]
    assert not strict, strict
    assert any(k.startswith("results/shards/") and k.endswith(".arrow") for k in a)


def _slurm_runs(cluster, xdg: Path, onslurm: Path, env: dict, cfg: list[str], t0: float) -> None:
    """The profile-name dry run and Slurm runs 1-3 of the demo test, in `onslurm`."""
    # the literal profile-name form resolves (dry run); GPU stages show their GPU in the job list
    subprocess.run([sys.executable, "-m", "vqdna", "install-profile", "--force"], cwd=onslurm, env=env, check=True,
                   capture_output=True)
    dry = snakemake([*TARGETS, "--profile", "slurm", "-n", *cfg], onslurm, env, timeout=300)
    assert dry.returncode == 0, dry.log
    assert "Using profile slurm" in dry.stdout + dry.stderr, dry.log
    if CANCEL_RULE == "train_tokenizer":
        assert re.search(r"rule train_tokenizer:[\s\S]*?resources:[^\n]*gpu=1", dry.stdout + dry.stderr), dry.log

    # run 1: a first part only (the full run must resume after it)
    r1 = snakemake([*FIRST, "--profile", "profiles/slurm", *FAST, *cfg], onslurm, env)
    assert r1.returncode == 0, r1.log
    jobs1 = submitted(r1)
    assert jobs1, r1.log
    _assert_completed_batch_jobs(cluster, jobs1, onslurm)
    done_rules = {_rule_of(r) for r in _recs(cluster, jobs1)}
    print(f"[{time.monotonic() - t0:.0f}s] slurm run 1: {len(jobs1)} jobs")

    # run 2: everything; one CANCEL_RULE job is cancelled while it runs (as a preemption would)
    args2 = [*TARGETS, "--profile", "profiles/slurm", *FAST, *cfg]
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args2], cwd=onslurm, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = _cancel_first_running(cluster, onslurm, f"rule_{CANCEL_RULE}", proc, timeout=900)
    out2, _ = proc.communicate(timeout=900)
    log2 = f"$ snakemake {' '.join(args2)}\n{out2[-15000:]}"
    jobs2 = dict(SUBMITTED.findall(out2))
    assert victim is not None, f"no {CANCEL_RULE} job was seen running to cancel\n" + log2
    assert victim in jobs2, log2
    assert proc.returncode != 0, log2
    assert f"SLURM-job '{victim}' failed" in out2 and "CANCELLED" in out2, log2
    assert jobs2[victim] in out2.split(f"SLURM-job '{victim}' failed", 1)[1], "log path not reported\n" + log2
    recs2 = {r["JobId"]: r for r in _recs(cluster, jobs2)}
    assert recs2[victim]["JobState"] == "CANCELLED", recs2[victim]
    # resume: nothing finished in run 1 was submitted again
    again = {_rule_of(r) for r in recs2.values()} & done_rules
    assert not again, f"rules finished in run 1 were resubmitted: {again}\n{log2}"
    print(f"[{time.monotonic() - t0:.0f}s] slurm run 2: {len(jobs2)} jobs, {victim} cancelled")
    _assert_completed_batch_jobs(cluster, {j: p for j, p in jobs2.items() if j != victim}, onslurm)
    if CANCEL_RULE == "train_tokenizer":  # the GPU the test config asks for reached Slurm
        tok = [r for r in recs2.values() if _rule_of(r) == "rule_train_tokenizer"]
        assert tok and all("gpu:1" in r.get("TresPerJob", "") for r in tok), tok

    # run 3: resumes, submitting only the cancelled job
    r3 = snakemake([*TARGETS, "--profile", "profiles/slurm", *FAST, *cfg], onslurm, env)
    assert r3.returncode == 0, r3.log
    jobs3 = submitted(r3)
    recs3 = _recs(cluster, jobs3)
    assert [r["Comment"] for r in recs3] == [recs2[victim]["Comment"]], r3.log
    _assert_completed_batch_jobs(cluster, jobs3, onslurm)
    print(f"[{time.monotonic() - t0:.0f}s] slurm run 3 (resume): {len(jobs3)} job")


def _recs(cluster, job_ids) -> list[dict[str, str]]:
    recs = {r["JobId"]: r for r in cluster.job_records()}
    missing = [j for j in job_ids if j not in recs]
    assert not missing, f"slurmctld has no record of jobs {missing}"
    return [recs[j] for j in job_ids]


def _assert_completed_batch_jobs(cluster, jobs: dict[str, str], workdir: Path) -> None:
    """Each job is a batch job (sbatch) of slurmctld that completed, in the repo copy, with the
    rule name as its comment; slurmctld's log shows each submission."""
    ctld_log = cluster.log("slurmctld").read_text(errors="replace")
    for rec in _recs(cluster, jobs):
        assert rec["BatchFlag"] == "1", rec
        assert rec["JobState"] == "COMPLETED", rec
        assert rec["WorkDir"] == str(workdir), rec
        assert rec["Comment"].startswith("rule_"), rec
        assert re.search(rf"submit_batch_job: JobId={rec['JobId']}\b", ctld_log), rec["JobId"]


def _cancel_first_running(cluster, workdir: Path, rule_prefix: str | None, proc, timeout: float):
    """scancel the first RUNNING job of `rule_prefix` (any pipeline job when None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"], env=cluster.env,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            jid, comment, wd = (line.split("|") + ["", ""])[:3]
            if wd == str(workdir) and (rule_prefix is None or comment.startswith(rule_prefix)):
                time.sleep(1.0)  # let the job step start, as a preemption would find it
                subprocess.run(["scancel", jid], env=cluster.env)
                return jid
        time.sleep(0.2)
    return None
