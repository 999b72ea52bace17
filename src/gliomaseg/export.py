"""``gliomaseg export``: a checkpoint to ONNX, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gliomaseg.data.files import write_text
from gliomaseg.errors import GliomasegError


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = 17, batch: int = 2, tolerance: float = 1e-4) -> dict:
    """Write ``out`` (dynamic batch; normalization and threshold as metadata) and compare logits.

    The model card goes into the ONNX metadata (``model_card``, JSON) and beside the file as ``MODEL_CARD.md``.
    Returns ``{"path", "max_abs_diff", "tolerance", "model_card"}``; raises when the difference exceeds ``tolerance``.
    """
    import onnx
    import torch

    from gliomaseg.inference.predictor import load_checkpoint
    from gliomaseg.inference.runtime import OnnxPredictor
    from gliomaseg.model_card import CARD_FILE, CARD_KEY, checkpoint_card, render_markdown

    predictor = load_checkpoint(checkpoint, channels_last=False)
    model = predictor.model.float().eval()
    size = predictor.image_size
    dummy = torch.randn(batch, 3, size, size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.onnx.export(
        model, (dummy,), str(tmp), input_names=["images"], output_names=["logits"], opset_version=opset,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )
    proto = onnx.load(str(tmp))
    meta = {**asdict(predictor.info), "input": "images: float32 (N, 3, S, S), (pixel/255 - mean) / std, RGB",
            "output": "logits: (N, 1, S, S); tumour where sigmoid(logit) > threshold"}
    _, card = checkpoint_card(checkpoint)
    for key, value in (("gliomaseg", meta), (CARD_KEY, card)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    expected = predictor.logits(images).cpu().numpy()
    got = OnnxPredictor(out).logits(images)
    diff = float(np.abs(expected - got).max())
    if diff > tolerance:
        raise GliomasegError(f"{out}: ONNX logits differ from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    card_path = write_text(render_markdown(card), out.parent / CARD_FILE)
    return {"path": str(out), "max_abs_diff": diff, "tolerance": tolerance, "model_card": str(card_path)}
