"""Predictors: uint8 RGB slices at the model's size in, tumour probabilities out.

``load_checkpoint`` reads a training checkpoint with ``torch.load(weights_only=True)``: the
checkpoint carries its architecture, encoder, image size, normalization and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gliomaseg.errors import CheckpointError


class Predictor(Protocol):
    image_size: int
    threshold: float

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, S, S) float32 probabilities."""


@dataclass
class ModelInfo:
    arch: str
    encoder: str
    image_size: int
    mean: list[float]
    std: list[float]
    threshold: float
    in_channels: int = 3
    classes: int = 1
    train_csv: str | None = None
    val_csv: str | None = None


def read_checkpoint(path: str | Path) -> tuple[dict, ModelInfo]:
    """The model state dict and its description, loaded without executing pickled code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "arch" not in checkpoint.get("hyper_parameters", {}):
        raise CheckpointError(f"{path}: not a gliomaseg checkpoint (no state_dict with model hyperparameters)")
    h = checkpoint["hyper_parameters"]
    info = ModelInfo(
        arch=h["arch"], encoder=h["encoder"], image_size=int(h["image_size"]), mean=list(h["mean"]), std=list(h["std"]),
        threshold=float(h.get("threshold", 0.5)), in_channels=int(h.get("in_channels", 3)), classes=int(h.get("classes", 1)),
        train_csv=h.get("train_csv"), val_csv=h.get("val_csv"),
    )
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    return state, info


class TorchPredictor:
    """A PyTorch model in eval mode; ``precision`` is ``32`` or ``bf16`` (autocast)."""

    def __init__(self, model, info: ModelInfo, device: str = "cpu", precision: str = "32", channels_last: bool = True,
                 micro_batch: int | None = None):
        import torch

        self.torch = torch
        self.info = info
        self.image_size = info.image_size
        self.threshold = info.threshold
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = channels_last
        # On CPU, batches of 2 ran fastest per slice here (docs/benchmarks.md); on GPU, run the batch whole.
        self.micro_batch = micro_batch or (2 if self.device.type == "cpu" else 1 << 30)
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(info.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(info.std, device=self.device).view(1, 3, 1, 1) * 255.0

    def logits(self, images: np.ndarray):
        step = self.micro_batch
        return self.torch.cat([self._logits(images[i : i + step]) for i in range(0, len(images), step)])

    def _logits(self, images: np.ndarray):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images)[:, 0].sigmoid().cpu().numpy()


def load_checkpoint(path: str | Path, device: str = "cpu", precision: str = "32", channels_last: bool = True) -> TorchPredictor:
    """A :class:`TorchPredictor` from a training checkpoint (``best.ckpt`` / ``last.ckpt``)."""
    from gliomaseg.models import build_model

    state, info = read_checkpoint(path)
    model = build_model(info.arch, info.encoder, info.in_channels, info.classes, encoder_weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {info.arch}-{info.encoder} ({str(exc).splitlines()[0]})") from exc
    return TorchPredictor(model, info, device=device, precision=precision, channels_last=channels_last)


def open_predictor(checkpoint: str | Path | None = None, model: str | Path | None = None, *, backend: str | None = None,
                   device: str = "cpu", precision: str = "32", **onnx_options) -> Predictor:
    """The predictor a user asked for: a training checkpoint (PyTorch), an exported ONNX model, or,
    with neither, the model that ships with gliomaseg (ONNX, torch-free).

    ``backend`` (``torch`` / ``onnx``), when given, must agree with what was passed.
    ``onnx_options`` go to :class:`~gliomaseg.inference.runtime.OnnxPredictor` (e.g. ``threads``).
    """
    if checkpoint is not None and model is not None:
        raise CheckpointError(f"give a checkpoint ({checkpoint}) or an ONNX model ({model}), not both")
    if backend == "torch" and checkpoint is None:
        raise CheckpointError("the torch backend needs --checkpoint CKPT")
    if backend == "onnx" and checkpoint is not None:
        raise CheckpointError(f"{checkpoint}: the onnx backend runs an exported model (--model MODEL.onnx), not a checkpoint")
    if checkpoint is not None:
        return load_checkpoint(checkpoint, device=device, precision=precision)
    from gliomaseg.inference.runtime import OnnxPredictor

    if model is None:
        from gliomaseg.assets import shipped_model_path

        model = shipped_model_path()
    return OnnxPredictor(model, **onnx_options)
