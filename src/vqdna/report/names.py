"""File names of the report's outputs, shared by the rules (which declare them) and the code
(which writes them). Light on purpose: `workflow/rules/report.smk` imports it at parse time."""

from __future__ import annotations

# name -> title (the paper's numbering)
TABLES: dict[str, str] = {
    "table1_tokenizers": "Table 1. Tokenizer analysis on Covid variant classification",
    "table2_efficiency": "Table 2. Parameters, GFLOPs at 512 nt, pretraining tokens and average rank",
    "table3_pd_cpd_tfph": "Table 3. Promoter, core promoter and human TF prediction (MCC)",
    "table4_tfpm_cvc_ssp_eep": "Table 4. Mouse TF, Covid variants, splice sites, editing efficiency",
    "table5_emp": "Table 5. Epigenetic marks prediction, yeast (MCC)",
    "table6_species": "Table 6. Species classification accuracy by sequence length",
    "table7_codebook_size": "Table 7. Ablation of the codebook size",
    "table8_code_dim": "Table 8. Ablation of the code dimension",
    "table9_mask_ratio": "Table 9. Ablation of the stage-2 mask ratio",
}
TABLE_FORMATS = ("csv", "md", "tex")

# paper table number of each dataset table (Tables 3-6 list datasets)
DATASET_TABLE_NAMES: dict[int, str] = {3: "table3_pd_cpd_tfph", 4: "table4_tfpm_cvc_ssp_eep",
                                       5: "table5_emp", 6: "table6_species"}

FIGURES: dict[str, str] = {
    "figure1_bubble": "Figure 1. Performance per task family against model parameters",
    "figure5_hrq_codebook_umap": "Figure 5. UMAP of the HRQ codebooks, codes labelled by Grad-CAM class",
    "training_curves": "Training curves from MLflow: loss and code usage",
}
FIGURE_FORMATS = ("png", "svg")


def table_files(tables_dir: str = "results/tables") -> list[str]:
    return [f"{tables_dir}/{name}.{ext}" for name in TABLES for ext in TABLE_FORMATS]


def figure_files(figures_dir: str = "results/figures") -> list[str]:
    return [f"{figures_dir}/{name}.{ext}" for name in FIGURES for ext in FIGURE_FORMATS]
