"""Shared fixtures: tiny synthetic datasets made once per session."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Under pytest-xdist (`make test`) each worker runs one thread, pinned to a core of its own where there are as many
# cores as workers. On 2 cores, quiet: 2 min 45 s against 4 min 14 s serial (docs/benchmarks.md); two workers each
# spreading threads over both cores were slower than serial. Tests that need more than one CPU say so by patching
# the count (e.g. gliomaseg.core.parallel.available_cpus).
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        _cpus = sorted(os.sched_getaffinity(0))
        if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) <= len(_cpus):
            os.sched_setaffinity(0, {_cpus[int(_worker[2:]) % len(_cpus)]})
    except (AttributeError, OSError, ValueError):  # not Linux, or a sandbox that refuses: unpinned, still one thread
        pass
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Measured choices (training precision, ONNX Runtime settings) go to a cache of this test session only.
os.environ["GLIOMASEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="gliomaseg-test-cache-")


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


@pytest.fixture(scope="session")
def trained_run(prepared, tmp_path_factory) -> Path:
    """A tiny Unet-resnet18 trained for 2 epochs at 64 px: a real checkpoint for inference tests."""
    from gliomaseg.training.config import TrainConfig
    from gliomaseg.training.run import train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(out=str(out), data=str(prepared), epochs=2, batch_size=4, image_size=64, workers=0,
                      progress=False, lr=0.05, scheduler="none"))
    return out


class BrightPredictor:
    """Probability = red channel / 255 at the model's size: a torch-free predictor whose answer is known."""

    image_size = 32
    threshold = 0.5

    def __init__(self):
        self.seen: list[tuple[int, ...]] = []

    def probabilities(self, images):
        self.seen.append(images.shape)
        return images[..., 0].astype("float32") / 255.0


@pytest.fixture()
def bright_predictor() -> BrightPredictor:
    return BrightPredictor()


@pytest.fixture(scope="session")
def onnx_model(trained_run: Path, tmp_path_factory) -> Path:
    """``trained_run``'s best.ckpt exported to ONNX (the export's own check must pass)."""
    from gliomaseg.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = export_onnx(trained_run / "best.ckpt", out)
    assert result["max_rel_diff"] <= result["rtol"] and result["mask_agreement"] >= result["min_agreement"]
    return out


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def small64(tmp_path_factory) -> Path:
    """A data folder of 64 px slices (5 patients, about 6 slices each) with a patient split: for subprocess runs."""
    from gliomaseg.core.io import write_csv
    from gliomaseg.data.prepare import scan_folder, split_by_patient
    from gliomaseg.data.synth import generate

    root = tmp_path_factory.mktemp("small64")
    generate(root / "kaggle_3m", patients=5, slices=6, seed=5, size=64)
    info, _ = scan_folder(root / "kaggle_3m", expected_size=None)
    train, val = split_by_patient(info)
    for frame, name in ((info, "data_info.csv"), (train, "data_train.csv"), (val, "data_val.csv")):
        write_csv(frame, root / name)
    return root
