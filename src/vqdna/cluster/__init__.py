"""Cluster scale: Snakemake profiles, multi-node launch, shared MLflow server, a local test Slurm."""
