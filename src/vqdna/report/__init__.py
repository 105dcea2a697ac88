"""The report stage: the paper's tables and figures from this run's results (`vqdna aggregate`),
Table 1's tokenizer analysis (`vqdna probe`), and the HTML report (workflow/rules/report.smk)."""
