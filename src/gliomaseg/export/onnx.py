"""``gliomaseg export``: a checkpoint to ONNX, checked against PyTorch with ONNX Runtime before it is put in place.

:func:`export_variant` (``--quantize int8|fp16``) turns the checked fp32 export into a smaller variant with
:mod:`gliomaseg.export.quantization`, which checks it against fp32 on the validation slices before writing ``out``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from gliomaseg.core.defaults import ONNX_OPSET
from gliomaseg.core.errors import GliomasegError
from gliomaseg.core.io import atomic_write, write_text
from gliomaseg.data.intensity import DEFAULT_INTENSITY, INTENSITY_MEANING
from gliomaseg.modeling.denormals import flush_onnx

SAMPLE_SLICES = 8


def input_meaning(intensity: str) -> str:
    """What the ONNX model's input holds, in words (stored in its metadata)."""
    return f"images: float32 (N, 3, S, S), (pixel/255 - mean) / std, RGB; pixel: {INTENSITY_MEANING[intensity]}"


RTOL = 1e-3  # max |ONNX - PyTorch| logit difference, relative to the largest |logit| (at least 1)
MIN_MASK_AGREEMENT = 0.999  # fraction of pixels whose thresholded mask agrees


def sample_images(size: int, sample: str | Path | None = None, fallback_csv: str | Path | None = None,
                  intensity: str = DEFAULT_INTENSITY) -> tuple[np.ndarray, str]:
    """Up to :data:`SAMPLE_SLICES` realistic slices at the model's size, uint8 RGB (N, size, size, 3), and where they came from.

    From ``sample`` (a CSV of ``prepare``) when given, else from ``fallback_csv`` (the checkpoint's
    validation CSV) when it exists on this machine, else synthetic MRI-like slices with a tumour
    (:func:`gliomaseg.data.synth.sample_slices`). Slices of a CSV are standardized per patient when
    ``intensity`` is ``patient``, as the model will see them.
    """
    csv = sample if sample is not None else (fallback_csv if fallback_csv and Path(fallback_csv).is_file() else None)
    if csv is None:
        from gliomaseg.data.synth import sample_slices

        return sample_slices(SAMPLE_SLICES, size), "synthetic MRI-like slices"
    from gliomaseg.export.quantization import load_slices

    slices = load_slices(csv, size, limit=SAMPLE_SLICES, intensity=intensity)
    return slices.images, f"{len(slices.images)} slices of {csv}"


def compare_logits(expected: np.ndarray, got: np.ndarray, threshold: float) -> dict:
    """How far two models' logits (N, 1, S, S) are apart: max absolute and relative difference, mask agreement."""
    diff = float(np.abs(expected - got).max())
    cut = math.log(threshold / (1.0 - threshold))  # sigmoid(logit) > threshold  <=>  logit > cut
    mask_a, mask_b = expected > cut, got > cut
    return {
        "max_abs_diff": diff,
        "max_rel_diff": diff / max(1.0, float(np.abs(expected).max())),
        "mask_agreement": float((mask_a == mask_b).mean()),
        "positive_pixels": int(mask_a.sum()),
    }


def without_paths(value: object) -> object:
    """``value`` (plain JSON data) with every absolute path replaced by its file name: nothing of the training machine."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value) and (Path(value).is_absolute() or value[1:3] == ":\\"):
        return Path(value.replace("\\", "/")).name
    return value


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = ONNX_OPSET, sample: str | Path | None = None,
                rtol: float = RTOL, min_agreement: float = MIN_MASK_AGREEMENT, write_card: bool = True) -> dict:
    """Write ``out`` (dynamic batch; normalization, threshold and model card as metadata) once it agrees with PyTorch.

    The model is written to a unique temporary file beside ``out``, run on ONNX Runtime on realistic
    slices (see :func:`sample_images`) and compared with PyTorch; only when the relative logit difference
    is at most ``rtol`` and the masks agree on at least ``min_agreement`` of the pixels is it renamed to
    ``out``. Otherwise the temporary file is removed and a :class:`GliomasegError` says both numbers.
    The metadata carries no path of the training machine. With ``write_card`` the model card also goes
    beside the file, named after it (``model.onnx`` -> ``model.MODEL_CARD.md``). Returns ``{"path", "inputs", "max_abs_diff", "max_rel_diff", "rtol",
    "mask_agreement", "min_agreement", "positive_pixels", "card", "denormal_weights_flushed"}`` (and ``"model_card"``, the card's path).
    """
    import onnx
    import torch

    from gliomaseg.inference.onnx_backend import OnnxPredictor
    from gliomaseg.inference.torch_backend import load_checkpoint
    from gliomaseg.modeling.card import checkpoint_card, export_card_path, render_markdown
    from gliomaseg.modeling.spec import CARD_KEY, set_onnx_metadata

    predictor = load_checkpoint(checkpoint, channels_last=False)
    model = predictor.model.float().eval()
    size = predictor.image_size
    # The validation CSV, else (a final model trained without one) the training CSV: real slices either way.
    images, inputs = sample_images(size, sample, predictor.info.val_csv or predictor.info.train_csv, predictor.info.intensity)
    expected = predictor.logits(images).cpu().numpy()
    if not np.isfinite(expected).all():
        raise GliomasegError(f"{checkpoint}: not exported: the model gives non-finite logits (NaN or infinite) on {inputs}")
    card = without_paths(checkpoint_card(checkpoint)[1])
    out = Path(out)
    result: dict = {"path": str(out), "inputs": inputs, "rtol": rtol, "min_agreement": min_agreement, "card": card}

    def write_and_check(tmp: Path) -> None:
        torch.onnx.export(
            model, (torch.zeros(2, 3, size, size),), str(tmp), input_names=["images"], output_names=["logits"],
            opset_version=opset, dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
        proto = onnx.load(str(tmp))
        result["denormal_weights_flushed"] = flush_onnx(proto)  # BatchNorm folding can make new ones
        meta = {**predictor.info.portable(), "input": input_meaning(predictor.info.intensity),
                "output": "logits: (N, 1, S, S); tumour where sigmoid(logit) > threshold"}
        set_onnx_metadata(proto, meta)
        set_onnx_metadata(proto, card, CARD_KEY)
        onnx.save(proto, str(tmp))
        result.update(compare_logits(expected, OnnxPredictor(tmp, micro_batch=4).logits(images), predictor.threshold))
        # Written so that NaN fails: `nan > rtol` is False, `not nan <= rtol` is True.
        if not (result["max_rel_diff"] <= rtol and result["mask_agreement"] >= min_agreement):
            raise GliomasegError(
                f"{out}: not written: on {inputs}, ONNX logits differ from PyTorch by {result['max_abs_diff']:.2e} "
                f"({result['max_rel_diff']:.2e} relative, limit {rtol:.0e}) and the masks agree on "
                f"{result['mask_agreement']:.4%} of the pixels (limit {min_agreement:.2%})"
            )

    atomic_write(out, write_and_check)
    if write_card:
        result["model_card"] = str(write_text(render_markdown(card), export_card_path(out)))
    return result


def export_variant(checkpoint: str | Path, out: str | Path, variant: str, *, opset: int = ONNX_OPSET,
                   calibration_csv: str | Path | None = None, check_csv: str | Path | None = None,
                   calibration_slices: int | None = None, max_dice_drop: float | None = None,
                   sample: str | Path | None = None) -> dict:
    """Export ``checkpoint`` as its ``variant`` (``int8`` / ``fp16``) to ``out``, nothing written unless every check passes.

    The fp32 model goes through :func:`export_onnx` into a temporary file beside ``out`` (removed afterwards),
    then :func:`gliomaseg.export.quantization.write_variant` builds and checks the variant. ``calibration_csv``
    defaults to the checkpoint's training CSV, ``check_csv`` to its validation CSV. Returns the fp32 export's
    result with the variant's check report under ``"variant"``.
    """
    from gliomaseg.export import quantization
    from gliomaseg.modeling.spec import read_checkpoint

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
        result = export_onnx(checkpoint, fp32, opset=opset, sample=sample, write_card=False)  # the card comes once the variant passed
        options = {"calibration_slices": calibration_slices, "max_dice_drop": max_dice_drop}
        result["variant"] = quantization.write_variant(
            fp32, out, variant, check_csv=check_csv, calibration_csv=calibration_csv,
            validation_csvs=[Path(info.val_csv)] if info.val_csv else [], **{k: v for k, v in options.items() if v is not None},
        )
    finally:
        fp32.unlink(missing_ok=True)
    from gliomaseg.modeling.card import export_card_path, render_markdown

    result["path"] = str(out)
    result["model_card"] = str(write_text(render_markdown(result["card"]), export_card_path(out)))
    return result


def quantize_model(model: str | Path, out: str | Path, variant: str, *, check_csv: str | Path,
                   calibration_csv: str | Path | None = None, calibration_slices: int | None = None,
                   max_dice_drop: float | None = None) -> dict:
    """The ``variant`` (``int8`` / ``fp16``) of an exported fp32 ONNX model (``"shipped"``: the model inside gliomaseg).

    Unlike :func:`export_variant` there is no checkpoint to name the CSVs: ``check_csv`` (validation slices)
    and, for int8, ``calibration_csv`` (training slices, sharing none with ``check_csv``) are required.
    Nothing is written unless the check passes. Returns the variant's check report.
    """
    from gliomaseg.export import quantization

    if str(model) == "shipped":
        from gliomaseg.assets import shipped_model_path

        model = shipped_model_path()
    model = Path(model)
    if not model.is_file():
        raise GliomasegError(f"{model}: no such ONNX model")
    if variant == "int8" and calibration_csv is None:
        raise GliomasegError(f"{model}: int8 needs --calibration-csv (training slices to calibrate on; never the validation CSV)")
    options = {"calibration_slices": calibration_slices, "max_dice_drop": max_dice_drop}
    report = quantization.write_variant(model, out, variant, check_csv=check_csv, calibration_csv=calibration_csv,
                                        **{k: v for k, v in options.items() if v is not None})
    return {"path": str(out), "model": str(model), "variant": report}


def export_model(out: str | Path, *, checkpoint: str | Path | None = None, model: str | Path | None = None,
                 quantize: str | None = None, opset: int = ONNX_OPSET, sample: str | Path | None = None,
                 calibration_csv: str | Path | None = None, check_csv: str | Path | None = None,
                 calibration_slices: int | None = None, max_dice_drop: float | None = None) -> dict:
    """``gliomaseg export``: which inputs go together, and which of the functions above writes ``out``.

    A ``checkpoint`` is exported as fp32 (:func:`export_onnx`) or, with ``quantize``, as that variant
    (:func:`export_variant`); an fp32 ONNX ``model`` can only be quantized, and names no CSVs, so it needs
    ``quantize`` and ``check_csv`` (:func:`quantize_model`). Exactly one of ``checkpoint`` and ``model``.
    Returns the result of the function that ran (:func:`export_messages` says it in words).
    """
    if (checkpoint is None) == (model is None):
        raise GliomasegError("export needs --checkpoint (a training checkpoint) or --model (an fp32 ONNX model), not both")
    if model is not None:
        if not (quantize and check_csv):
            raise GliomasegError("export --model needs --quantize and --check-csv (validation slices; for int8 also --calibration-csv, "
                                 "training slices): an ONNX model does not name its CSVs")
        return quantize_model(model, out, quantize, check_csv=check_csv, calibration_csv=calibration_csv,
                              calibration_slices=calibration_slices, max_dice_drop=max_dice_drop)
    if quantize:
        return export_variant(checkpoint, out, quantize, opset=opset, calibration_csv=calibration_csv, check_csv=check_csv,
                              calibration_slices=calibration_slices, max_dice_drop=max_dice_drop, sample=sample)
    return export_onnx(checkpoint, out, opset=opset, sample=sample)


def variant_lines(v: dict) -> list[str]:
    """A variant's check report (:func:`gliomaseg.export.quantization.write_variant`) in words: calibration, agreement, Dice, size."""
    lines = []
    if "calibration" in v:
        lines.append(f"{v['weights']}: calibrated on {v['calibration_slices']} slices of {v['calibration_csv']} ({v['calibration']})")
    lines.append(f"{v['weights']} vs fp32 on {v['check_slices']} slices of {v['check_patients']} patients ({v['check_csv']}): "
                 f"mask pixel agreement {v['mask_agreement']:.5f}, {v['slices_with_different_masks']} slice(s) differ; "
                 f"per-patient Dice mean {v['patient_dice_mean']:.4f} vs {v['patient_dice_fp32_mean']:.4f} "
                 f"(drop {v['patient_dice_drop']:.4f}, limit {v['max_dice_drop_allowed']}), one patient's largest drop "
                 f"{v['patient_dice_drop_max']:.4f} ({v['worst_patient']}; limit {v['max_single_patient_dice_drop_allowed']}); "
                 f"{v['file_bytes'] / 1e6:.1f} MB vs {v['fp32_file_bytes'] / 1e6:.1f} MB")
    return lines


def export_messages(result: dict) -> list[str]:
    """What :func:`export_model` did, one line each: the fp32 check (a checkpoint's export), the variant's, the files written."""
    if "inputs" not in result:  # quantize_model: an ONNX model's variant, no fp32 export of a checkpoint
        return [*variant_lines(result["variant"]), f"wrote {result['path']} from {result['model']}"]
    lines = [f"fp32: ONNX Runtime vs PyTorch on {result['inputs']}: max abs logit difference {result['max_abs_diff']:.2e}, relative "
             f"{result['max_rel_diff']:.2e} (limit {result['rtol']:.0e}); masks agree on {result['mask_agreement']:.4%} of the pixels "
             f"(limit {result['min_agreement']:.2%}, {result['positive_pixels']} tumour pixels)"]
    if result.get("variant"):
        lines += variant_lines(result["variant"])
    return [*lines, f"wrote {result['path']}; model card {result['model_card']}"]
