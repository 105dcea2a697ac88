"""VQDNA: learned vector-quantized DNA vocabularies and the pipeline that reproduces the paper.

Importing this package is cheap on purpose: heavy libraries (torch, mlflow, snakemake)
are imported by the stage modules that need them, so GPU hosts without MLflow or
Snakemake can still run the model and bench code.
"""

__version__ = "0.1.0"
