"""Shared fixtures: tiny synthetic datasets made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from gliomaseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "kaggle_3m"
    generate(root, patients=6, slices=10, seed=3)
    return root


@pytest.fixture(scope="session")
def prepared(synth_root, tmp_path_factory) -> Path:
    """A prepared data folder (CSVs of the patient split) over ``synth_root``."""
    from gliomaseg.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(synth_root, out, plots=False)
    return out
