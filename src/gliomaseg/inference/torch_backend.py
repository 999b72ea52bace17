"""The PyTorch backend: a training checkpoint (loaded with ``weights_only=True``) as a :class:`Predictor`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from gliomaseg.core.defaults import INFERENCE_PRECISIONS
from gliomaseg.core.errors import CheckpointError, first_line
from gliomaseg.modeling.denormals import flush_state
from gliomaseg.modeling.spec import CARD_KEY, ModelInfo, load_checkpoint_file, model_state, pixel_normalization

# Micro-batches on CPU: fp32 ran fastest per slice in batches of 2, bf16 weights in batches of 8 (79 slices/s
# against 71 at 4: benchmarks/torch_paths.py on the Xeon of docs/benchmarks.md); on GPU the batch runs whole.
CPU_MICRO_BATCH = dict(zip(INFERENCE_PRECISIONS, (2, 8)))


class TorchPredictor:
    """A PyTorch model in eval mode; ``precision`` is ``32`` or ``bf16``.

    bf16 on CPU holds the weights and feeds the inputs in bf16 (autocast would cast every weight again on every
    call); on an AMX Xeon that ran 2.1-2.7x eager fp32 (two runs, docs/benchmarks.md). On GPU it is autocast. Either way the
    logits come back as float32.
    """

    backend = "torch"

    def __init__(self, model, info: ModelInfo, device: str = "cpu", precision: str = "32", channels_last: bool = True,
                 micro_batch: int | None = None, card: dict | None = None):
        import torch

        self.torch = torch
        self.info = info
        self.card = card  # the model card stored in the checkpoint (modeling.card), if any
        self.image_size = info.image_size
        self.threshold = info.threshold
        self.device = torch.device(device)
        if precision not in INFERENCE_PRECISIONS:
            raise CheckpointError(f"inference precision {precision!r}; valid: {', '.join(INFERENCE_PRECISIONS)}")
        self.precision = precision
        self.channels_last = channels_last
        self.micro_batch = micro_batch or (CPU_MICRO_BATCH[precision] if self.device.type == "cpu" else 1 << 30)
        self.model = model.to(self.device).eval()
        self.bf16_weights = precision == "bf16" and self.device.type == "cpu"
        if self.bf16_weights:
            from gliomaseg.modeling.precision import NO_BF16, cpu_runs_bf16

            if not cpu_runs_bf16():
                warnings.warn(f"--precision bf16: {NO_BF16}; --precision 32 is faster here", stacklevel=2)
            self.model = self.model.to(torch.bfloat16)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The float32 constants of modeling.spec.normalize, applied on the device in the same order.
        self.mean, self.std = (torch.from_numpy(c).to(self.device) for c in pixel_normalization(info.mean, info.std))

    def logits(self, images: np.ndarray):
        step = self.micro_batch
        return self.torch.cat([self._logits(images[i : i + step]) for i in range(0, len(images), step)])

    def _logits(self, images: np.ndarray):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16_weights:
            x = x.to(torch.bfloat16)
        autocast = self.precision == "bf16" and not self.bf16_weights
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            return self.model(x).float()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        logits = self.logits(images)
        if not bool(self.torch.isfinite(logits).all()):
            raise CheckpointError(f"{self.info.arch}-{self.info.encoder}: the model gives non-finite logits (NaN or infinite); "
                                  "a mask from it would be meaningless")
        return logits[:, 0].sigmoid().cpu().numpy()


def load_checkpoint(path: str | Path, device: str = "cpu", precision: str = "32", channels_last: bool = True) -> TorchPredictor:
    """A :class:`TorchPredictor` from a training checkpoint (``best.ckpt`` / ``last.ckpt``)."""
    from gliomaseg.core.errors import ConfigError
    from gliomaseg.modeling.models import build_model

    checkpoint, info = load_checkpoint_file(path)
    state = model_state(checkpoint, path)
    flush_state(state)  # denormal weights are zero to any precision that matters, and slow on x86 (modeling.denormals)
    card = checkpoint.get(CARD_KEY)
    try:
        model = build_model(info.arch, info.encoder, info.in_channels, info.classes, encoder_weights=None,
                            decoder_channels=info.decoder_channels)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {info.arch}-{info.encoder} ({first_line(exc)})") from exc
    return TorchPredictor(model, info, device=device, precision=precision, channels_last=channels_last,
                          card=card if isinstance(card, dict) else None)
