"""Smaller and faster ONNX models from an fp32 export, each checked against fp32 before it is kept.

- ``int8``: ONNX Runtime static quantization in QDQ format, weights int8 per output channel,
  activations uint8 (the U8S8 pair ONNX Runtime recommends for x86 CPUs with VNNI), activation ranges
  calibrated (min/max) on :data:`CALIBRATION_SLICES` slices drawn at random (seed :data:`CALIBRATION_SEED`)
  from the training CSV. Slices of the validation CSV are never used for calibration. The last node (the
  segmentation head, whose output is the logits compared with the threshold) stays in fp32.
- ``fp16``: the weights stored as float16 and cast back to float32 when the session loads: half the file,
  fp32 arithmetic, so about the same speed. A size option.

Either variant is compared with the fp32 model on every slice of a check CSV (the validation CSV by default):
the fraction of mask pixels that agree, and each patient's 3D Dice against the truth under both models. The
variant is refused (and no file written) when the mean per-patient Dice drops by more than
:data:`MAX_DICE_DROP` (0.005), or any one patient's by more than :data:`MAX_PATIENT_DICE_DROP` (0.05).
Both numbers are printed by ``gliomaseg export`` and stored in the model's ``gliomaseg`` metadata.
Torch-free: needs onnx, onnxruntime, numpy and OpenCV.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gliomaseg.core.defaults import CALIBRATION_SLICES, MAX_DICE_DROP, MAX_PATIENT_DICE_DROP
from gliomaseg.core.defaults import EXPORT_VARIANTS as VARIANTS
from gliomaseg.core.errors import DataError, GliomasegError
from gliomaseg.core.io import atomic_write
from gliomaseg.data.files import read_image, read_mask, read_slices_csv
from gliomaseg.data.intensity import DEFAULT_INTENSITY, PatientStatistics, check_intensity, standardize
from gliomaseg.evaluation.scorer import PatientScorer
from gliomaseg.modeling.spec import normalize, read_onnx_metadata, write_onnx_metadata

CALIBRATION_SEED = 0
CALIBRATION_BATCH = 8


class QuantizationError(GliomasegError):
    """A variant that failed its check against fp32, or calibration data that cannot be used."""


@dataclass
class SliceSet:
    """Slices at the model's size: ``images`` (N, S, S, 3) uint8 RGB, ``truths`` (N, S, S) uint8 0/1, one patient per slice."""

    csv: Path
    images: np.ndarray
    truths: np.ndarray | None
    patients: list[str]
    image_paths: list[str]


def load_slices(csv: str | Path, size: int, *, limit: int | None = None, seed: int = CALIBRATION_SEED,
                with_truth: bool = False, intensity: str = DEFAULT_INTENSITY) -> SliceSet:
    """Read a CSV of ``prepare`` (all rows, or ``limit`` rows drawn at random with ``seed``, kept in CSV order).

    Images are resized to ``size`` with area interpolation (as ``predict`` does), masks with nearest neighbour.
    With ``intensity="patient"`` each image is first standardized with statistics over all of its patient's
    slices in the CSV (drawn or not), as ``segment`` does for a model trained that way.
    """
    csv = Path(csv)
    every = read_slices_csv(csv, require_mask=with_truth)
    frame = every.sample(n=limit, random_state=seed).sort_index() if limit is not None and limit < len(every) else every
    if not len(frame):
        raise DataError(f"{csv}: no slices")
    per_patient = check_intensity(intensity) == "patient"
    statistics = PatientStatistics(every)  # over all of a patient's rows, drawn or not
    images, truths = [], []
    for row in frame.itertuples():
        image = read_image(row.image_path)
        if per_patient:
            image = standardize(image, *statistics(row.patient))
        images.append(image if image.shape[:2] == (size, size) else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        if with_truth:
            mask = read_mask(row.mask_path)
            truths.append(mask if mask.shape == (size, size) else cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))
    return SliceSet(csv, np.stack(images), np.stack(truths).astype(np.uint8) if with_truth else None,
                    [str(p) for p in frame["patient"]], [str(p) for p in frame["image_path"]])


def _metadata(path: Path) -> dict[str, Any]:
    """The fp32 model's description (:func:`gliomaseg.modeling.spec.read_onnx_metadata`), required here."""
    meta = read_onnx_metadata(path)
    if meta is None:
        raise QuantizationError(f"{path}: no gliomaseg metadata (export it with `gliomaseg export`)")
    return meta


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray) -> None:
    """Static QDQ quantization of ``src`` into ``dst``: per-channel int8 weights, uint8 activations, min/max ranges.

    ``calibration``: (N, S, S, 3) uint8 RGB training slices at the model's size, fed in batches of
    :data:`CALIBRATION_BATCH`. The node producing the model's output stays fp32. Not thread-safe: ONNX Runtime's
    pre-processing runs with the process's working folder set to a private work folder.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    meta = _metadata(src)
    work = Path(tempfile.mkdtemp(prefix=".gliomaseg-quant-", dir=dst.parent))
    try:
        prepared = work / "prepared.onnx"
        # Shape inference and ONNX Runtime's graph optimizations (Conv+BatchNorm fusion) before quantizing. Run from
        # inside the work folder: where its symbolic shape inference fails it leaves a temporary model and a
        # weights file of the model's size in the current folder, which must not be the user's.
        source, target = str(src.resolve()), str(prepared.resolve())  # resolved before the folder changes
        with contextlib.chdir(work):
            quant_pre_process(source, target)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        outputs = {o.name for o in graph.output}
        head = [node.name for node in graph.node if set(node.output) & outputs]
        input_name = graph.input[0].name
        batches = [normalize(calibration[i : i + CALIBRATION_BATCH], meta["mean"], meta["std"]) for i in range(0, len(calibration), CALIBRATION_BATCH)]

        class Reader(CalibrationDataReader):
            """The calibration batches; ``set_range`` lets ONNX Runtime reduce them to min/max one at a time."""

            def __init__(self) -> None:
                self._batches = iter(batches)

            def __len__(self) -> int:
                return len(batches)

            def set_range(self, start_index: int, end_index: int) -> None:
                self._batches = iter(batches[start_index:end_index])

            def get_next(self):
                batch = next(self._batches, None)
                return None if batch is None else {input_name: batch}

        quantize_static(
            str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            # Strided min/max: every tensor of one batch at a time in memory, ranges merged across batches
            # (all batches at once would hold ~50 MB per 256 px slice; CalibMaxIntermediateOutputs drops data).
            nodes_to_exclude=head, extra_options={"CalibStridedMinMax": 1},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convert_fp16_weights(src: str | Path, dst: str | Path, min_elements: int = 16) -> int:
    """Store ``src``'s float32 weights (initializers of at least ``min_elements``) as float16 in ``dst``.

    Each one is cast back to float32 by a ``Cast`` node, so the arithmetic stays fp32. Tensors with
    values beyond float16's range stay float32. Returns the number of tensors converted.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept, converted = [], [], 0
    for init in graph.initializer:
        array = numpy_helper.to_array(init) if init.data_type == TensorProto.FLOAT else None
        if array is None or array.size < min_elements or not np.isfinite(array).all() or np.abs(array).max() > 65000:
            kept.append(init)
            continue
        half = numpy_helper.from_array(array.astype(np.float16), f"{init.name}__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"{init.name}__to_fp32", to=TensorProto.FLOAT))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return converted


def _patient_dice(masks: np.ndarray, truths: np.ndarray, patients: list[str]) -> dict[str, float]:
    """Each patient's slices as one volume: Dice = 2|P & T| / (|P| + |T|), 1 when both are empty, patients in CSV order.

    Args:
        masks, truths: (N, S, S) 0/1 or bool, one slice a row; ``patients``: the patient of each row.
    """
    scorer = PatientScorer(order="first-seen")
    for patient, mask, truth in zip(patients, masks, truths):
        scorer.add_masks(patient, mask, truth)
    return scorer.patient_scores("dice")


def compare_with_fp32(reference: str | Path, candidate: str | Path, check: SliceSet) -> dict[str, Any]:
    """Masks of ``candidate`` against those of the fp32 ``reference`` on every slice of ``check`` (which needs truths).

    Returns pixel agreement (fraction of all mask pixels that are equal), slices whose masks differ, and the
    per-patient Dice (each patient's 3D Dice against the truth) under each model: the mean over patients,
    ``patient_dice_drop`` (fp32 mean minus variant mean; negative when the variant scores higher) and the
    largest single patient's drop, ``patient_dice_drop_max``.
    """
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    assert check.truths is not None
    ref, cand = OnnxPredictor(reference, micro_batch=4), OnnxPredictor(candidate, micro_batch=4)
    threshold = ref.threshold
    ref_masks = ref.probabilities(check.images) > threshold
    cand_masks = cand.probabilities(check.images) > threshold
    dice_ref = _patient_dice(ref_masks, check.truths, check.patients)
    dice_cand = _patient_dice(cand_masks, check.truths, check.patients)
    drops = {p: dice_ref[p] - dice_cand[p] for p in dice_ref}
    worst = max(drops, key=drops.get)
    return {
        "check_csv": check.csv.name,
        "check_slices": len(check.images),
        "check_patients": len(dice_ref),
        "mask_agreement": round(float((ref_masks == cand_masks).mean()), 6),
        "slices_with_different_masks": int((ref_masks != cand_masks).any(axis=(1, 2)).sum()),
        "patient_dice_fp32_mean": round(float(np.mean(list(dice_ref.values()))), 5),
        "patient_dice_mean": round(float(np.mean(list(dice_cand.values()))), 5),
        "patient_dice_drop": round(float(np.mean(list(drops.values()))), 6),
        "patient_dice_diff_mean_abs": round(float(np.mean(np.abs(list(drops.values())))), 6),
        "patient_dice_drop_max": round(float(drops[worst]), 6),
        "worst_patient": worst,
        "dice_reduction": "per patient: 3D Dice over the patient's slices against the truth, at the model's size",
    }


def _check_calibration_source(calibration: SliceSet, forbidden: list[Path]) -> None:
    used = set(calibration.image_paths)
    for csv in forbidden:
        if not Path(csv).is_file():
            continue
        if Path(csv).resolve() == calibration.csv.resolve():
            raise QuantizationError(f"{calibration.csv}: is the validation CSV; calibrate on the training CSV instead")
        shared = used & set(read_slices_csv(csv, require_mask=False, check_paths=False)["image_path"].astype(str))
        if shared:
            raise QuantizationError(
                f"{calibration.csv}: {len(shared)} calibration slice(s) are also in {csv} (e.g. {sorted(shared)[0]}); "
                "calibration must not see validation slices"
            )


def write_variant(
    fp32_model: str | Path,
    out: str | Path,
    variant: str,
    *,
    check_csv: str | Path,
    calibration_csv: str | Path | None = None,
    calibration_slices: int = CALIBRATION_SLICES,
    max_dice_drop: float = MAX_DICE_DROP,
    validation_csvs: list[Path] | None = None,
) -> dict[str, Any]:
    """Write the ``variant`` (``int8`` or ``fp16``) of the exported ``fp32_model`` to ``out``, if it passes its check.

    The variant is built and checked in a temporary file beside ``out`` and renamed into place only when no
    patient of ``check_csv`` loses more than ``max_dice_drop`` Dice; otherwise :class:`QuantizationError`
    is raised and ``out`` is left as it was. ``validation_csvs`` (plus ``check_csv``) may share no slice with
    the calibration slices. Returns the report stored in the model's metadata under ``"variant"``.
    """
    if variant not in VARIANTS:
        raise QuantizationError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    fp32_model, out = Path(fp32_model), Path(out)
    meta = _metadata(fp32_model)
    size = int(meta["image_size"])
    intensity = meta.get("intensity", DEFAULT_INTENSITY)
    from gliomaseg.inference.onnx_backend import file_digest

    # fp32_digest pairs the variant with the file it was made from (gliomaseg.inference.variants)
    report: dict[str, Any] = {"weights": variant, "fp32_digest": file_digest(fp32_model), "max_dice_drop_allowed": max_dice_drop,
                              "max_single_patient_dice_drop_allowed": MAX_PATIENT_DICE_DROP}
    calibration = None
    if variant == "int8":
        if calibration_csv is None:
            raise QuantizationError(f"{fp32_model}: int8 needs a training CSV to calibrate on (--calibration-csv)")
        if calibration_slices < 1:
            raise QuantizationError(f"--calibration-slices must be at least 1, got {calibration_slices}")
        calibration = load_slices(calibration_csv, size, limit=calibration_slices, intensity=intensity)
        _check_calibration_source(calibration, [Path(check_csv), *(validation_csvs or [])])
        report.update(calibration_csv=Path(calibration_csv).name, calibration_slices=len(calibration.images),
                      calibration=f"min/max over {len(calibration.images)} training slices drawn at random (seed {CALIBRATION_SEED})",
                      quantization="ONNX Runtime static, QDQ, int8 weights per channel, uint8 activations; output head fp32")
    check = load_slices(check_csv, size, with_truth=True, intensity=intensity)
    def build(tmp: Path) -> None:  # into a temporary file that replaces ``out`` only once the check has passed
        if calibration is not None:
            quantize_int8(fp32_model, tmp, calibration.images)
        else:
            report["tensors_converted"] = convert_fp16_weights(fp32_model, tmp)
        report.update(compare_with_fp32(fp32_model, tmp, check))
        report["file_bytes"], report["fp32_file_bytes"] = tmp.stat().st_size, fp32_model.stat().st_size
        problem = None
        if report["patient_dice_drop"] > max_dice_drop:
            problem = f"mean per-patient Dice drops by {report['patient_dice_drop']:.4f} (limit {max_dice_drop})"
        elif report["patient_dice_drop_max"] > MAX_PATIENT_DICE_DROP:
            problem = (f"patient {report['worst_patient']} loses {report['patient_dice_drop_max']:.4f} Dice "
                       f"(limit {MAX_PATIENT_DICE_DROP} for one patient)")
        if problem:
            raise QuantizationError(
                f"{out}: not written: with {variant} the {problem}; mask pixel agreement with fp32 "
                f"{report['mask_agreement']:.5f} on {report['check_slices']} slices of {report['check_csv']}"
            )
        write_onnx_metadata(tmp, {**meta, "variant": report})

    atomic_write(out, build)
    return report
