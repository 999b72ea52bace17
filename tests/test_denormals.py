"""Denormal weights are flushed to zero wherever a model is loaded or exported (gliomaseg.modeling.denormals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gliomaseg.modeling.denormals import FLOAT32_TINY, flush_array, flush_state

DENORMAL = np.float32(1e-40)


def _denormals(values: np.ndarray) -> int:
    return int(((values != 0) & (np.abs(values) < FLOAT32_TINY)).sum())


def _planted_checkpoint(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's trained checkpoint with 50 denormal values planted in one convolution weight."""
    import torch

    checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    key = next(k for k, v in checkpoint["state_dict"].items() if k.startswith("model.") and v.ndim == 4)
    weight = checkpoint["state_dict"][key].contiguous().clone()
    weight.view(-1)[:50] = 1e-40
    checkpoint["state_dict"][key] = weight
    planted = tmp_path / "run" / "best.ckpt"
    planted.parent.mkdir()
    torch.save(checkpoint, planted)
    return planted


def test_flush_zeroes_denormals_only():
    values = np.array([1e-40, -3e-39, 1e-30, 0.5, 0.0, -1e-45], np.float32)
    flushed, count = flush_array(values)
    assert count == 3 and flushed.tolist() == pytest.approx([0, 0, 1e-30, 0.5, 0, 0], abs=0, rel=1e-6)
    assert flush_array(np.array([1, 2], np.int64))[1] == 0  # integer weights (int8 models) are left alone
    import torch

    state = {"w": torch.tensor([1e-40, 1.0, -2e-39]), "n": torch.tensor([3]), "b": torch.tensor([0.25])}
    assert flush_state(state) == 2 and state["w"].tolist() == [0.0, 1.0, 0.0] and state["b"].item() == 0.25


def test_onnx_runtime_runs_a_model_with_denormal_weights_flushed_and_leaves_the_file(onnx_model: Path, tmp_path: Path,
                                                                                   monkeypatch):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from gliomaseg.inference.onnx_backend import OnnxPredictor, file_digest

    model = onnx.load(str(onnx_model))
    weight = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 4)
    values = numpy_helper.to_array(weight).copy()
    values.flat[:50] = DENORMAL
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    planted = tmp_path / "denormal.onnx"
    onnx.save(model, str(planted))
    digest = file_digest(planted)
    loaded = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda source, *a, **k: loaded.append(source) or real(source, *a, **k))
    OnnxPredictor(planted, threads=1, micro_batch=1)
    OnnxPredictor(onnx_model, threads=1, micro_batch=1)
    ran = onnx.load_from_string(loaded[0])  # the planted model reached ONNX Runtime as flushed bytes
    assert all(_denormals(numpy_helper.to_array(i)) == 0 for i in ran.graph.initializer)
    assert loaded[1] == str(onnx_model)  # a clean model is loaded from its file as it is
    assert file_digest(planted) == digest  # the user's file is not rewritten


def test_checkpoints_load_and_export_without_denormals(trained_run: Path, tmp_path: Path):
    import onnx
    from onnx import numpy_helper

    from gliomaseg.export.onnx import export_onnx
    from gliomaseg.inference.torch_backend import load_checkpoint

    planted = _planted_checkpoint(trained_run, tmp_path)
    predictor = load_checkpoint(planted)
    assert all(_denormals(p.detach().numpy()) == 0 for p in predictor.model.state_dict().values() if p.is_floating_point())
    export_onnx(planted, tmp_path / "model.onnx")
    exported = onnx.load(str(tmp_path / "model.onnx"))
    assert all(_denormals(numpy_helper.to_array(i)) == 0 for i in exported.graph.initializer)


def test_export_flushes_what_reaches_it(trained_run: Path, tmp_path: Path, monkeypatch):
    # With the load's flush turned off, the planted denormals reach the export (and survive BatchNorm folding):
    # export's own flush must find and zero them.
    import onnx
    from onnx import numpy_helper

    import gliomaseg.inference.torch_backend as torch_backend
    from gliomaseg.export.onnx import export_onnx

    planted = _planted_checkpoint(trained_run, tmp_path)
    monkeypatch.setattr(torch_backend, "flush_state", lambda state: 0)
    result = export_onnx(planted, tmp_path / "model.onnx")
    assert result["denormal_weights_flushed"] > 0
    exported = onnx.load(str(tmp_path / "model.onnx"))
    assert all(_denormals(numpy_helper.to_array(i)) == 0 for i in exported.graph.initializer)


def test_a_damaged_onnx_model_is_one_line_naming_it(onnx_model: Path, tmp_path: Path):
    # An initializer whose bytes are cut short loads, then fails in the flush: still a CheckpointError, no traceback.
    import onnx

    from gliomaseg.core.errors import CheckpointError
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    model = onnx.load(str(onnx_model))
    weight = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.raw_data) > 8)
    weight.raw_data = weight.raw_data[:-3]
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    with pytest.raises(CheckpointError, match="damaged.onnx: not a loadable ONNX model"):
        OnnxPredictor(damaged, threads=1, micro_batch=1)
