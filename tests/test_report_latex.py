"""The tables' LaTeX output: compiled with pdflatex when it is installed (one-column and two-column
pages, no error, nothing wider than the line), structurally checked always. The checks are shown to
fail on broken output. CI needs no TeX: without pdflatex the compile tests skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_report_tables import PAPER_CSV, make_data, write_summary
from vqdna.report.inputs import collect_summaries
from vqdna.report.paper import load_paper_results
from vqdna.report.render import LATEX_PACKAGES, Table, to_latex
from vqdna.report.tables import build_all

PDFLATEX = shutil.which("pdflatex")
needs_tex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (apt: texlive-latex-recommended)")


def latex_structure_errors(text: str, ncols: int) -> list[str]:
    """What is wrong with one generated table, without TeX: environments, column counts, escaping."""
    errors = []
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([\w*]+)\}", text):
        if kind == "begin":
            stack.append(env)
        elif not stack or stack.pop() != env:
            errors.append(f"\\end{{{env}}} closes nothing or the wrong environment")
    errors += [f"\\begin{{{env}}} not closed" for env in stack]
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", text)
    if not spec or len(spec.group(1)) != ncols:
        errors.append(f"tabular column spec {spec.group(1) if spec else None!r} is not {ncols} columns")
    if not all(rule in text for rule in (r"\toprule", r"\midrule", r"\bottomrule")):
        return errors + ["booktabs rules missing"]
    header = text.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0]
    body = text.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    for line in filter(None, (header + body).splitlines()):
        if not line.endswith(r"\\"):
            errors.append(f"row does not end with \\\\: {line!r}")
        if len(re.findall(r"(?<!\\)&", line)) != ncols - 1:  # an escaped \& is text
            errors.append(f"row has not {ncols} cells: {line!r}")
        if re.search(r"(?<!\\)[%#_^~$]", line.replace("$\\pm$", "").replace("$\\Delta$", "")
                     .replace("$\\times$", "").replace("$^\\dagger$", "").replace("$-$", "")):
            errors.append(f"unescaped LaTeX special character in {line!r}")
    plain = text.replace(r"\{", "").replace(r"\}", "")
    if plain.count("{") != plain.count("}"):
        errors.append("unbalanced braces")
    if any(ord(ch) > 127 for ch in text):
        errors.append("non-ASCII characters (would need inputenc set-up)")
    return errors


def compile_latex(fragment: str, workdir: Path, *, twocolumn: bool = False) -> tuple[int, str]:
    """pdflatex on a minimal document that \\input's the fragment; (return code, log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "table.tex").write_text(fragment)
    doc = ("\\documentclass" + ("[twocolumn]" if twocolumn else "") + "{article}\n"
           f"\\usepackage{{{','.join(LATEX_PACKAGES)}}}\n"
           "\\begin{document}\n\\input{table}\n\\end{document}\n")
    (workdir / "doc.tex").write_text(doc)
    p = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=workdir,
                       capture_output=True, text=True, timeout=120)
    log = (workdir / "doc.log").read_text(errors="replace") if (workdir / "doc.log").exists() else p.stdout
    return p.returncode, log


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Every table, with the cells that need escaping: stand-in marks, ±, partial runs, Table 9 aliases."""
    root = tmp_path_factory.mktemp("latex")
    write_summary(root, "hrq", "emp_H3", {"0": 0.8, "1": 0.7}, stand_in=True)
    write_summary(root, "hrq", "species_1k", {"0": 0.6}, metric="accuracy")
    write_summary(root, "vq_mask_15", "emp_H3", {"0": 0.77, "1": 0.78, "2": 0.79})
    data = make_data(load_paper_results(PAPER_CSV), collect_summaries(root, ["vq", "hrq", "vq_mask_15"]),
                     ablations={"variant_name": "{base}_{row}", "reconstruction_key": "val.rec_acc",
                                "base_tokenizers": {"VQDNA": "vq", "VQDNA-HRQ": "hrq"}},
                     variant_runs={"vq_mask_25": "vq"}, pretrain_metrics={"vq_mask_15": {"mask_ratio": 0.15}})
    return build_all(data)


def test_every_table_is_structurally_sound(tables):
    assert len(tables) == 9
    for table in tables:
        assert latex_structure_errors(to_latex(table), len(table.header)) == [], table.name


BROKEN = {
    "unescaped ampersand": ("A & B", "row has not"),
    "unescaped underscore": ("emp_H3", "unescaped LaTeX special"),
    "unescaped percent": ("25%", "unescaped LaTeX special"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_structure_check_fails_on_broken_cells(tables, what):
    cell, expected = BROKEN[what]
    good = to_latex(tables[0])
    line = next(ln for ln in good.splitlines() if ln.startswith("vq &"))
    broken = good.replace(line, line.replace("vq &", cell + " &", 1), 1)
    errors = latex_structure_errors(broken, len(tables[0].header))
    assert any(expected in e for e in errors), errors


def test_structure_check_fails_on_broken_layout(tables):
    table = tables[0]
    good = to_latex(table)
    n = len(table.header)
    assert any("not closed" in e for e in latex_structure_errors(good.replace(r"\end{table*}", ""), n))
    assert any("column spec" in e for e in latex_structure_errors(good, n + 1))
    row_end = good.index(r" \\", good.index(r"\midrule"))
    assert any("does not end" in e for e in latex_structure_errors(good[:row_end] + good[row_end + 3:], n))
    assert "unbalanced braces" in latex_structure_errors(good.replace(r"\caption{", r"\caption{{", 1), n)
    assert any("non-ASCII" in e for e in latex_structure_errors(good.replace("---", "—", 1), n))


@needs_tex
@pytest.mark.parametrize("twocolumn", [False, True], ids=["onecolumn", "twocolumn"])
def test_every_table_compiles_and_fits_the_line(tables, tmp_path, twocolumn):
    for table in tables:
        rc, log = compile_latex(to_latex(table), tmp_path / table.name, twocolumn=twocolumn)
        errors = [ln for ln in log.splitlines() if ln.startswith("!")]
        assert rc == 0 and not errors, (table.name, errors, log[-2000:])
        assert "Overfull \\hbox" not in log, (table.name, re.findall(r"Overfull \\hbox.*", log))
        assert re.search(r"Output written on doc\.pdf \(\d+ pages?", log), table.name


@needs_tex
def test_compile_check_catches_broken_output(tables, tmp_path):
    good = to_latex(tables[0])
    rc, _ = compile_latex(good.replace(r"\bottomrule", r"\bottomrul"), tmp_path / "undefined")
    assert rc != 0
    rc, log = compile_latex(good.replace(r"\resizebox{\linewidth}{!}{\usebox0}", r"\usebox0"), tmp_path / "wide")
    assert rc == 0 and "Overfull \\hbox" in log  # without the shrink-to-fit, the table is too wide


def test_wide_table_shrinks_only_when_wider_than_the_line():
    narrow = Table("t", "T", ["a", "b"], [["1", "2"]], [{}])
    text = to_latex(narrow)
    assert r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi" in text
    assert "\\usepackage{booktabs,graphicx}" in text.splitlines()[0]


def test_caption_leaves_numbering_to_the_document_and_code_spans_are_typewriter():
    table = Table("t", "Table 9. Ablation of the stage-2 mask ratio", ["a"], [["1"]], [{}],
                  notes=["Run with `--configfile config/ablations.yaml` on emp_H3.", "A lone ` stays text."])
    text = to_latex(table)
    assert r"\caption{Ablation of the stage-2 mask ratio (paper Table 9)}" in text
    assert r"Run with \texttt{--configfile config/ablations.yaml} on emp\_H3." in text
    assert "A lone ` stays text." in text
