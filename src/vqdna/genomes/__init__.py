"""Genome acquisition (download) and Arrow shards of fixed-length windows."""
