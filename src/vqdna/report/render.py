"""Write one table as CSV (numbers, for machines), Markdown and LaTeX (formatted, for people).

Markdown and LaTeX are rendered here rather than through pandas' `to_markdown`/`to_latex`
so that escaping is exact and the output does not depend on optional packages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_path

MISSING = "missing"
NO_VALUE = "—"


@dataclass
class Table:
    name: str
    title: str
    header: list[str]  # display columns
    rows: list[list[str]]  # display cells, one list per row
    records: list[dict]  # full numeric records, one per row (the CSV)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        for row in self.rows:
            if len(row) != len(self.header):
                raise ValueError(f"{self.name}: row {row} has {len(row)} cells, header has {len(self.header)}")


def fmt_number(value: float | None, decimals: int, *, sign: bool = False, significant: bool = False) -> str:
    """Fixed decimals; with `significant`, values too small for them keep `decimals` significant
    digits instead (a demo model's 0.0049 B tokens must not print as 0.00)."""
    if value is None:
        return NO_VALUE
    plus = "+" if sign else ""
    if significant and value != 0 and abs(value) < 10 ** (1 - decimals):
        return f"{value:{plus}.{max(decimals, 1)}g}"
    return f"{value:{plus}.{decimals}f}"


def fmt_mean_std(mean: float | None, std: float | None, n: int, decimals: int) -> str:
    if mean is None:
        return MISSING
    if n <= 1 or std is None:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def to_csv(table: Table) -> str:
    import pandas as pd

    frame = pd.DataFrame.from_records(table.records)
    # Missing values stay empty cells (NaN), never 0.
    return frame.to_csv(index=False, na_rep="")


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {_md_cell(n)}" for n in table.notes)
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "—": "---", "Δ": r"$\Delta$", "×": r"$\times$", "†": r"$^\dagger$", "−": r"$-$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


LATEX_PACKAGES = ("booktabs", "graphicx")  # \toprule/\midrule/\bottomrule; \resizebox


def _latex_caption(title: str) -> str:
    """"Table 9. Ablation of X" -> "Ablation of X (paper Table 9)": the document numbers its own tables."""
    m = re.match(r"(Table \d+)\. (.*)", title)
    return latex_escape(f"{m.group(2)} (paper {m.group(1)})" if m else title)


def _latex_text(text: str) -> str:
    """Escaped prose; Markdown `code` spans become \\texttt (no -- ligature, no curly quotes)."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: plain text
        return latex_escape(text)
    return "".join(r"\texttt{" + latex_escape(p) + "}" if i % 2 else latex_escape(p) for i, p in enumerate(parts))


def to_latex(table: Table) -> str:
    spec = "l" * len(table.header)
    out = [
        "% vqdna table; needs \\usepackage{" + ",".join(LATEX_PACKAGES) + "}",
        # table*: full text width in a two-column paper (the same as table in one column)
        r"\begin{table*}[t]",
        r"\centering",
        r"\caption{" + _latex_caption(table.title) + "}",
        r"\label{tab:" + table.name.replace("_", "-") + "}",
        r"\small\setlength{\tabcolsep}{4pt}",
        # typeset once, shrink to the line width only when wider (a 10-column table is, in any layout)
        r"\sbox0{\begin{tabular}{" + spec + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    out += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    out.append(r"\bottomrule")
    out.append(r"\end{tabular}}")
    out.append(r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi")
    if table.notes:
        out.append(r"\par\smallskip\raggedright\footnotesize " + r" \\ ".join(_latex_text(n) for n in table.notes))
    out.append(r"\end{table*}")
    return "\n".join(out) + "\n"


RENDERERS = {"csv": to_csv, "md": to_markdown, "tex": to_latex}


def write_table(table: Table, out_dir: str | Path, formats=("csv", "md", "tex")) -> list[Path]:
    written = []
    for ext in formats:
        path = Path(out_dir) / f"{table.name}.{ext}"
        with atomic_path(path) as tmp:
            tmp.write_text(RENDERERS[ext](table))
        written.append(path)
    return written
