"""Predictors: uint8 RGB slices at the model's size in, tumour probabilities out; :func:`open_predictor` picks the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from gliomaseg.core.errors import CheckpointError
from gliomaseg.inference.torch_backend import load_checkpoint
from gliomaseg.modeling.spec import ModelInfo


class Predictor(Protocol):
    backend: str  # "torch" (TorchPredictor, a checkpoint) or "onnx" (OnnxPredictor, with its runtime settings)
    image_size: int
    threshold: float
    info: "ModelInfo"  # intensity: what segment does to a patient's slices before they reach the model

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, S, S) float32 probabilities."""


def open_predictor(checkpoint: str | Path | None = None, model: str | Path | None = None, *, device: str = "cpu",
                   precision: str = "32", variant: str = "auto", **onnx_options) -> Predictor:
    """The predictor a user asked for: a training checkpoint (PyTorch), an exported ONNX model, or,
    with neither, the model that ships with gliomaseg (ONNX, torch-free).

    ``onnx_options`` go to :class:`~gliomaseg.inference.onnx_backend.OnnxPredictor` (e.g. ``threads``).
    An ONNX model with a checked ``NAME.int8.onnx`` beside it (the shipped one has) runs as whichever of the two
    is faster here, unless ``variant`` says ``fp32`` or ``int8`` (:mod:`gliomaseg.inference.variants`).
    """
    if checkpoint is not None and model is not None:
        raise CheckpointError(f"give a checkpoint ({checkpoint}) or an ONNX model ({model}), not both")
    if checkpoint is not None and (variant != "auto" or onnx_options.get("threads") is not None):
        raise CheckpointError(f"{checkpoint}: --variant and --threads are for an ONNX model (--model or the shipped one), "
                              "not a checkpoint")
    if checkpoint is not None:
        return load_checkpoint(checkpoint, device=device, precision=precision)
    from gliomaseg.inference.variants import open_fastest

    if model is None:
        from gliomaseg.assets import shipped_model_path

        model = shipped_model_path()
    return open_fastest(model, variant, **onnx_options)
