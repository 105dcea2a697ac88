"""Which genome files feed the species task: `datasets.species.genomes` entries give either
`files` directly or an `accession` of the genome table (`genomes.table`), which must be an
included row whose `role` has `species_task`; its file is the download stage's output
`{datasets.species.genomes_dir}/{accession}.fna.gz`. The table thus stays the one list of what
is downloaded, and a species-task genome never has to be a pre-training genome too.
"""

from __future__ import annotations

from pathlib import Path

from ..genomes.table import SPECIES_TASK, genome_with_role, read_genome_table


def species_genomes(cfg: dict) -> list[dict]:
    """`datasets.species.genomes` with every entry as {name, files}."""
    scfg = cfg["datasets"]["species"]
    entries = scfg["genomes"]
    rows = None
    out = []
    for g in entries:
        if "accession" not in g:
            out.append({"name": g["name"], "files": [str(f) for f in g["files"]]})
            continue
        table = cfg["genomes"]["table"]
        if rows is None:
            rows = read_genome_table(table)
        row = genome_with_role(rows, g["accession"], SPECIES_TASK, table)
        out.append({"name": g["name"], "files": [str(Path(scfg["genomes_dir"]) / f"{row.accession}.fna.gz")]})
    return out
