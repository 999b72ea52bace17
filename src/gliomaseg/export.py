"""``gliomaseg export``: a checkpoint to ONNX, checked against PyTorch with ONNX Runtime.

With ``variant="int8"`` or ``"fp16"`` the checked fp32 export is turned into that variant by
:mod:`gliomaseg.quantization`, which checks it against fp32 on the validation slices before writing ``out``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gliomaseg.errors import GliomasegError


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = 17, batch: int = 2, tolerance: float = 1e-4,
                variant: str | None = None, calibration_csv: str | Path | None = None, check_csv: str | Path | None = None,
                calibration_slices: int | None = None, max_dice_drop: float | None = None) -> dict:
    """Write ``out`` (dynamic batch; normalization and threshold as metadata) and compare logits.

    Returns ``{"path", "max_abs_diff", "tolerance"}`` (plus ``"variant"``: the check report of an int8 / fp16
    variant); raises when the difference exceeds ``tolerance``. For a variant, ``calibration_csv`` defaults to
    the checkpoint's training CSV and ``check_csv`` to its validation CSV.
    """
    import onnx
    import torch

    from gliomaseg.inference.predictor import load_checkpoint
    from gliomaseg.inference.runtime import OnnxPredictor

    predictor = load_checkpoint(checkpoint, channels_last=False)
    model = predictor.model.float().eval()
    size = predictor.image_size
    dummy = torch.randn(batch, 3, size, size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = out
    if variant is not None:  # the fp32 model is an intermediate: a unique temp file beside out
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.fp32.", suffix=".onnx", dir=out.parent)
        os.close(fd)
        target = Path(name)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        torch.onnx.export(
            model, (dummy,), str(tmp), input_names=["images"], output_names=["logits"], opset_version=opset,
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
        proto = onnx.load(str(tmp))
        meta = {**asdict(predictor.info), "input": "images: float32 (N, 3, S, S), (pixel/255 - mean) / std, RGB",
                "output": "logits: (N, 1, S, S); tumour where sigmoid(logit) > threshold"}
        entry = proto.metadata_props.add()
        entry.key, entry.value = "gliomaseg", json.dumps(meta)
        onnx.save(proto, str(tmp))
        tmp.replace(target)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
        expected = predictor.logits(images).cpu().numpy()
        got = OnnxPredictor(target, micro_batch=4).logits(images)
        diff = float(np.abs(expected - got).max())
        if diff > tolerance:
            raise GliomasegError(f"{out}: ONNX logits differ from PyTorch by {diff:.2e} (> {tolerance:.0e})")
        result = {"path": str(out), "max_abs_diff": diff, "tolerance": tolerance}
        if variant is not None:
            result["variant"] = _write_variant(target, out, variant, predictor.info, calibration_csv, check_csv,
                                               calibration_slices, max_dice_drop)
        return result
    finally:
        tmp.unlink(missing_ok=True)
        if variant is not None:
            target.unlink(missing_ok=True)


def _write_variant(fp32: Path, out: Path, variant: str, info, calibration_csv, check_csv, calibration_slices, max_dice_drop) -> dict:
    from gliomaseg import quantization as q

    check_csv = check_csv or info.val_csv
    if variant == "int8":
        calibration_csv = calibration_csv or info.train_csv
    if not check_csv:
        raise GliomasegError(f"{out}: the checkpoint names no validation CSV; pass --check-csv data_val.csv")
    options = {"calibration_slices": calibration_slices, "max_dice_drop": max_dice_drop}
    return q.write_variant(fp32, out, variant, check_csv=check_csv, calibration_csv=calibration_csv,
                           validation_csvs=[Path(info.val_csv)] if info.val_csv else [],
                           **{k: v for k, v in options.items() if v is not None})
