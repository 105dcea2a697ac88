"""Every workflow rule that runs something declares a conda env that exists and agrees with pyproject.

`snakemake --sdm conda` builds jobs' environments from `workflow/envs/*.yaml` only; a rule without
`conda:` would silently run in whatever environment Snakemake itself was started from, and an env
file that drifted from pyproject.toml would give cluster jobs other package versions than the tests.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
ENVS = ROOT / "workflow" / "envs"
SRC = ROOT / "src"
FULL_ENV = ENVS / "vqdna.yaml"

# conda-forge package name -> PyPI distribution name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch", "snakemake-minimal": "snakemake", "matplotlib-base": "matplotlib",
                 "python-isal": "isal"}
# PyPI distribution -> top-level import name, where they differ
PYPI_TO_IMPORT = {"biopython": "Bio", "isal": "isal", "scikit-learn": "sklearn", "umap-learn": "umap",
                  "pyyaml": "yaml", "snakemake-executor-plugin-slurm": "snakemake_executor_plugin_slurm"}
NOT_PYPI = {"python", "pip"}
RUNS = re.compile(r"^    (shell|run|script|notebook|wrapper):")


def split_spec(spec: str) -> tuple[str, str]:
    name = re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0]
    return name.lower(), spec[len(name):].strip()


def pyproject_deps() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(split_spec(d) for d in deps)


def env_deps(path: Path) -> dict[str, str]:
    """PyPI name -> version spec (conda's single `=` read as pip's `==`)."""
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{path.name}: pip sub-lists are not mirrored from pyproject: {dep!r}"
        name, spec = split_spec(dep)
        if name in NOT_PYPI:
            continue
        assert name not in out, f"{path.name}: {name} listed twice"
        out[CONDA_TO_PYPI.get(name, name)] = re.sub(r"^=(?!=)", "==", spec)
    return out


def parse_rules() -> dict[str, dict]:
    """rule name -> {'file', 'runs' (has shell/run/script), 'conda' (path or None), 'body'}."""
    rules: dict[str, dict] = {}
    for smk in sorted(RULES.glob("*.smk")):
        current = None
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^(?:rule|checkpoint) (\w+):", line)
            if m:
                current = rules[m.group(1)] = {"file": smk, "runs": False, "conda": None, "body": []}
                continue
            if current is None:
                continue
            if line and not line[0].isspace():
                current = None
                continue
            current["body"].append(line)
            if RUNS.match(line):
                current["runs"] = True
            if line.startswith("    conda:"):
                value = line.split(":", 1)[1].strip() or lines[i + 1].strip()
                current["conda"] = ast.literal_eval(value.rstrip(","))
    return rules


def test_every_rule_that_runs_has_an_existing_conda_env():
    rules = parse_rules()
    running = {n: r for n, r in rules.items() if r["runs"]}
    assert len(running) >= 15, f"the rule parser found only {sorted(running)}"
    missing = [n for n, r in running.items() if r["conda"] is None]
    assert not missing, f"rules without a conda: directive: {missing}"
    for name, rule in running.items():
        env = (rule["file"].parent / rule["conda"]).resolve()
        assert env.parent == ENVS.resolve() and env.is_file(), f"rule {name}: conda env {rule['conda']} not found"


def test_full_env_mirrors_pyproject_with_torch_pinned():
    deps, env = pyproject_deps(), env_deps(FULL_ENV)
    assert set(env) == set(deps), (f"vqdna.yaml vs pyproject: missing {sorted(set(deps) - set(env))}, "
                                   f"extra {sorted(set(env) - set(deps))}")
    torch_pin = env.pop("torch")
    assert re.fullmatch(r"==\d+\.\d+(\.\d+)?", torch_pin), f"pytorch must be pinned to one version, got {torch_pin!r}"
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installed = re.search(r"TORCH_SPEC:-torch==([\w.]+)", setup).group(1)
    assert torch_pin == f"=={installed}", f"vqdna.yaml pins pytorch {torch_pin}, scripts/setup.sh installs {installed}"
    low = re.fullmatch(r">=([\d.]+)", deps["torch"]).group(1)
    assert tuple(map(int, installed.split("."))) >= tuple(map(int, low.split("."))), "torch pin below pyproject's"
    differ = {n: (env[n], deps[n]) for n in env if env[n] != deps[n]}
    assert not differ, f"version specs differ (env, pyproject): {differ}"


def test_cpu_env_is_the_full_env_minus_the_model_stack():
    full = env_deps(FULL_ENV)
    for path in sorted(ENVS.glob("*.yaml")):
        env = env_deps(path)
        extra = {n: s for n, s in env.items() if full.get(n) != s}
        assert not extra, f"{path.name}: packages or versions not as in vqdna.yaml/pyproject: {extra}"


def _module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def third_party_imports(module: str) -> dict[str, str]:
    """Top-level non-vqdna packages imported anywhere (functions included) by `module` and the
    vqdna modules it imports, transitively -> the vqdna module that imports it first."""
    seen, found, todo = set(), {}, [module]
    while todo:
        mod = todo.pop()
        if mod in seen or (path := _module_file(mod)) is None:
            continue
        seen.add(mod)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t.split(".")[0] == "vqdna":
                    todo.append(t)
                else:
                    found.setdefault(t.split(".")[0], mod)
    return found


def _stages_of(rule: dict) -> list[str]:
    return re.findall(r"(?:vqdna|launcher)\(\s*['\"]([\w-]+)['\"]\s*\)", "\n".join(rule["body"]))


def _smk_imports() -> list[str]:
    mods = []
    for smk in [ROOT / "Snakefile", *sorted(RULES.glob("*.smk"))]:
        mods += re.findall(r"^from (vqdna[\w.]*) import", smk.read_text(), flags=re.M)
    return mods


@pytest.mark.parametrize("env_name", sorted(p.name for p in ENVS.glob("*.yaml") if p != FULL_ENV))
def test_stages_in_a_partial_env_import_nothing_it_lacks(env_name):
    sys.path.insert(0, str(SRC))
    try:
        from vqdna.cli import STAGES
    finally:
        sys.path.remove(str(SRC))
    lacking = {PYPI_TO_IMPORT.get(n, n.replace("-", "_")) for n in set(pyproject_deps()) - set(env_deps(ENVS / env_name))}
    users = {n: r for n, r in parse_rules().items() if r["conda"] and Path(r["conda"]).name == env_name}
    assert users, f"no rule uses {env_name}"
    for name, rule in users.items():
        stages = _stages_of(rule)
        # a rule that runs Snakemake itself (report_html) imports what the rule files import
        modules = [STAGES[s][0] for s in stages] or (_smk_imports() if "snakemake" in "\n".join(rule["body"]) else [])
        assert modules, f"rule {name}: cannot tell which vqdna code it runs"
        for module in modules:
            bad = {pkg: via for pkg, via in third_party_imports(module).items() if pkg in lacking}
            assert not bad, f"rule {name} ({module}) uses {env_name}, which lacks {sorted(bad)} (imported by {bad})"
