"""Comparison experiments from YAML files: each run an ordinary training run in its own folder (``experiments.spec`` describes the file)."""
