"""``gliomaseg export``: a checkpoint to ONNX, checked against PyTorch with ONNX Runtime.

:func:`export_variant` (``--quantize int8|fp16``) turns the checked fp32 export into a smaller variant with
:mod:`gliomaseg.quantization`, which checks it against fp32 on the validation slices before writing ``out``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gliomaseg.data.files import write_text
from gliomaseg.errors import GliomasegError


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = 17, batch: int = 2, tolerance: float = 1e-4,
                write_card: bool = True) -> dict:
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
    got = OnnxPredictor(out, micro_batch=4).logits(images)
    diff = float(np.abs(expected - got).max())
    if diff > tolerance:
        raise GliomasegError(f"{out}: ONNX logits differ from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    result = {"path": str(out), "max_abs_diff": diff, "tolerance": tolerance, "card": card}
    if write_card:
        result["model_card"] = str(write_text(render_markdown(card), out.parent / CARD_FILE))
    return result


def export_variant(checkpoint: str | Path, out: str | Path, variant: str, *, opset: int = 17,
                   calibration_csv: str | Path | None = None, check_csv: str | Path | None = None,
                   calibration_slices: int | None = None, max_dice_drop: float | None = None) -> dict:
    """Export ``checkpoint`` as its ``variant`` (``int8`` / ``fp16``) to ``out``, nothing written unless every check passes.

    The fp32 model goes through :func:`export_onnx` into a temporary file beside ``out`` (removed afterwards),
    then :func:`gliomaseg.quantization.write_variant` builds and checks the variant. ``calibration_csv``
    defaults to the checkpoint's training CSV, ``check_csv`` to its validation CSV. Returns the fp32 export's
    result with the variant's check report under ``"variant"``.
    """
    from gliomaseg import quantization
    from gliomaseg.inference.predictor import read_checkpoint

    _, info = read_checkpoint(checkpoint)
    out = Path(out)
    check_csv = check_csv or info.val_csv
    if variant == "int8":
        calibration_csv = calibration_csv or info.train_csv
    if not check_csv:
        raise GliomasegError(f"{checkpoint}: names no validation CSV to check the {variant} model on; pass --check-csv data_val.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.fp32.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    fp32 = Path(name)
    try:
        result = export_onnx(checkpoint, fp32, opset=opset, write_card=False)  # the card comes once the variant passed
        options = {"calibration_slices": calibration_slices, "max_dice_drop": max_dice_drop}
        result["variant"] = quantization.write_variant(
            fp32, out, variant, check_csv=check_csv, calibration_csv=calibration_csv,
            validation_csvs=[Path(info.val_csv)] if info.val_csv else [], **{k: v for k, v in options.items() if v is not None},
        )
    finally:
        fp32.unlink(missing_ok=True)
    from gliomaseg.model_card import CARD_FILE, render_markdown

    result["path"] = str(out)
    result["model_card"] = str(write_text(render_markdown(result["card"]), out.parent / CARD_FILE))
    return result
