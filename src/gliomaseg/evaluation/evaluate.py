"""``gliomaseg evaluate`` and ``gliomaseg score``: per-slice and per-patient results plus a summary, nnU-Net style.

``evaluate`` predicts with a checkpoint and scores; ``score`` scores mask files that anything wrote
(``predict``, the ONNX backend, another tool, a human reader). Both go through :func:`score_masks`.

Writes ``slices.csv`` (one row a slice), ``patients.csv`` (one row a patient), ``summary.json``,
``summary.md`` and ``patient_dice.png``. Predictions are made at the model's size and resized back,
so masks are compared at their own resolution.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from gliomaseg.core.errors import DataError
from gliomaseg.core.parallel import thread_map
from gliomaseg.data.files import read_slices_csv
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.formats.slice_files import SLICES
from gliomaseg.data.sources import PatientInput, open_source
from gliomaseg.evaluation.metrics import (
    REDUCTION_MEANING,
    REPORT_MEANING,
    confusion_numpy,
    hd95,
    worst_case_distance,
)
from gliomaseg.evaluation.scorer import PatientScorer
from gliomaseg.evaluation.summary import write_scores
from gliomaseg.inference.postprocess import ALL_STEPS, PostProcess
from gliomaseg.inference.segment import DEFAULT_BATCH_SIZE, masks_from_probabilities, segment


def _variant_scores(counts: list[tuple[str, int, int, int, int]]) -> dict[str, float]:
    _, _, report = PatientScorer().extend(counts).report(with_smp=False)
    return {k: report[k] for k in ("iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "iou_micro", "dice_micro", "patient_dice_mean")}


def is_volume(patient: PatientInput) -> bool:
    """Whether a patient's slices form a volume: a NIfTI case, or slice numbers that are known, distinct and consecutive.

    An image-split CSV holds random slices of a patient; stacking those would make 3D numbers (HD95,
    the largest 3D component) meaningless.
    """
    if patient.geometry is not None:
        return True
    numbers = [item.slice for item in patient.slices]
    return None not in numbers and len(set(numbers)) == len(numbers) and max(numbers) - min(numbers) + 1 == len(numbers)


def held_out_counts(patients: list[PatientInput], csv: str | None) -> dict | None:
    """How many of the evaluated slices and patients a training or model-selection CSV holds (None when it is not here).

    Slices are matched by patient and image file name, so a copy of the data elsewhere still matches.
    """
    if not csv or not Path(csv).is_file():
        return None
    other = read_slices_csv(csv, check_paths=False)
    keys = set(zip(other["patient"], other["image_path"].map(lambda p: Path(p).name)))
    slices = sum((p.name, item.image_path.name) in keys for p in patients for item in p.slices)
    return {"csv": Path(csv).name, "slices": int(slices), "patients": len({p.name for p in patients} & set(other["patient"]))}


def truth_masks(patient: PatientInput) -> list[np.ndarray]:
    """The truth masks of a patient's slices, uint8 0/1 (H, W) each; an error names the first slice without one."""
    def truth(item) -> np.ndarray:
        mask = item.mask()
        if mask is None:
            raise DataError(f"{item.image_path}: slice has no truth mask to score against")
        return mask

    return thread_map(truth, patient.slices)  # read on the slice threads; the error of the first slice in order


def score_masks(cases: Iterable[tuple[PatientInput, list[np.ndarray], list[np.ndarray]]],
                spacing: tuple[float, float, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-slice and per-patient scores and the dataset report of predicted masks against truth.

    Args:
        cases: per patient, its :class:`PatientInput` (slices in slice order), predicted masks and
            true masks, each uint8 0/1 (H, W), one per slice and of the slice's size.
        spacing: voxel size in mm (x, y, z: column width, row height, slice step, as everywhere) for HD95;
            ``None``: each NIfTI patient's header
            spacing when every patient has one in mm, else pixels, the slice step counted as one pixel
            ("spacing unknown").

    HD95 is measured only when every patient is a volume (:func:`is_volume`); a missed or a false
    tumour scores the diagonal of the patient's volume (:func:`~gliomaseg.evaluation.metrics.worst_case_distance`).
    The report says ``volumes`` and ``hd95_unit``.

    Returns:
        ``(slices, patients, report)``: :func:`~gliomaseg.evaluation.scorer.slice_table` rows (patient, slice,
        image_path, mask_path, true_pixels, predicted_pixels, tp, fp, fn, tn, iou, dice, has_tumour),
        :func:`~gliomaseg.evaluation.scorer.patient_table` rows with HD95 (a patient's slices as one volume),
        and :func:`~gliomaseg.evaluation.scorer.dataset_report`, all from one
        :class:`~gliomaseg.evaluation.scorer.PatientScorer`.
    """
    scorer, hd, volumes = PatientScorer(), {}, True
    cases = list(cases)
    headers = [None if p.geometry is None else p.geometry.spacing for p, _, _ in cases]
    per_patient = spacing is None and bool(headers) and all(h is not None for h in headers)
    for (patient, predictions, truths), header in zip(cases, headers):
        size = spacing if spacing is not None else (header if per_patient else None)
        step = None if size is None else (size[2], size[1], size[0])  # hd95 takes (slice, row, column)
        volumes = volumes and is_volume(patient)
        for item, pred, truth in zip(patient.slices, predictions, truths):
            if pred.shape != truth.shape:
                raise DataError(f"{item.image_path}: prediction of shape {pred.shape} does not match the truth mask's {truth.shape}")
            scorer.add_masks(patient.name, pred, truth, slice=item.slice, image_path=str(item.image_path),
                             mask_path=None if item.mask_path is None else str(item.mask_path),
                             true_pixels=int(truth.sum()), predicted_pixels=int(pred.sum()))
        if len({m.shape for m in predictions}) == 1:
            volume = np.stack(truths)
            hd[patient.name] = hd95(np.stack(predictions), volume, step)
            if math.isinf(hd[patient.name]):  # a missed or a false tumour: the worst distance the volume allows
                hd[patient.name] = worst_case_distance(volume.shape, step)
    slices, patients, report = scorer.report(hd if volumes else None)
    if not volumes:
        report.update(patient_hd95_mean=None, patient_hd95_median=None)
    unit = "mm (given spacing)" if spacing else "mm (NIfTI header spacing)" if per_patient else "pixels (spacing unknown; slice step counted as one pixel)"
    report.update(volumes=volumes, hd95_unit=unit,
                  hd95_worst_case="a missed or false tumour scores the diagonal of the patient's volume")
    return slices, patients, report


def evaluate(
    checkpoint: str | Path | None,
    csv_path: str | Path,
    out: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    compare: bool = True,
    postprocess: PostProcess = ALL_STEPS,
    tta: str = "flip",
    device: str = "cpu",
    predictor=None,
    spacing: tuple[float, float, float] | None = None,
) -> dict:
    """Evaluate a checkpoint: :func:`~gliomaseg.inference.segment.segment` every patient of ``csv_path``
    (any source with masks: a CSV of ``prepare``, a kaggle_3m folder, NIfTI cases), then :func:`score_masks`.

    Returns the summary written to ``summary.json``. With ``compare``, it also holds a table of the
    same scores with TTA and with each post-processing step, on the same slices. On a CSV whose patients
    are not whole volumes (an image split) the 3D numbers are left out. ``spacing``: see :func:`score_masks`.
    """
    from gliomaseg.inference.torch_backend import load_checkpoint

    if predictor is None and checkpoint is None:
        raise ValueError("evaluate needs a checkpoint or a predictor")
    predictor = predictor or load_checkpoint(checkpoint, device=device)
    if checkpoint is None:  # an ONNX model: the file that ran (the chosen variant), by name
        checkpoint = Path(getattr(predictor, "path", "model")).name
    patients, _ = open_source(csv_path, strict=True)
    threshold = predictor.threshold
    if not all(is_volume(p) for p in patients):
        postprocess = replace(postprocess, largest_3d=False)
    variants: dict[str, PostProcess] = {"none": PostProcess()}
    if compare:
        variants.update({f"post:{name}": steps for name, steps in postprocess.single_steps().items()})
        variants["post:all"] = postprocess
    counts: dict[str, list] = {name: [] for name in variants}
    if compare:
        counts[f"tta:{tta}"] = []
    cases = []
    for patient in patients:
        images = thread_map(lambda item: item.image(lenient=False), patient.slices)
        truths = truth_masks(patient)
        probs, raw = segment(predictor, images, threshold, batch_size=batch_size)
        cases.append((patient, raw, truths))
        for name, steps in variants.items():
            masks = masks_from_probabilities(probs, threshold, steps) if steps.active else raw
            counts[name].extend((patient.name, *confusion_numpy(m, t)) for m, t in zip(masks, truths))
        if compare:
            _, tta_masks = segment(predictor, images, threshold, tta, batch_size=batch_size)
            counts[f"tta:{tta}"].extend((patient.name, *confusion_numpy(m, t)) for m, t in zip(tta_masks, truths))
    slices, patient_scores, report = score_masks(cases, spacing)
    info = getattr(predictor, "info", None)
    overlap = {"training": held_out_counts(patients, getattr(info, "train_csv", None)),
               "model_selection": held_out_counts(patients, getattr(info, "val_csv", None))}
    # Held out only when both CSVs are here and neither holds an evaluated patient.
    known = [o for o in overlap.values() if o is not None]
    summary = {
        "checkpoint": str(checkpoint),  # as the user gave it
        "evaluated_csv": str(csv_path),
        "model_selection_csv": Path(info.val_csv).name if getattr(info, "val_csv", None) else None,
        "overlap": overlap,
        "held_out": False if any(o["patients"] for o in known) else (True if len(known) == 2 else None),
        "threshold": threshold,
        "model": None if info is None else f"{info.arch}-{info.encoder} @ {info.image_size}px",
        **report,
        "variants": {name: _variant_scores(c) for name, c in counts.items()} if compare else {},
        "meaning": REPORT_MEANING,
        "reductions": REDUCTION_MEANING,
    }
    write_scores(out, summary, slices, patient_scores)
    return summary


def _prediction_slices(pred: Path, patient: PatientInput) -> list[np.ndarray]:
    """The predicted masks of one truth patient, from a NIfTI volume or from PNG / image slices in ``pred``
    (the names are the formats': :meth:`NiftiVolumes.prediction_candidates`, :meth:`SliceFiles.prediction_candidates`)."""
    for volume in NIFTI.prediction_candidates(pred, patient.name):
        if volume.is_file():
            masks = NIFTI.read_mask(volume)
            if len(masks) != len(patient.slices):
                raise DataError(f"{volume}: {len(masks)} axial slices, but the truth of {patient.name} has {len(patient.slices)}")
            return masks
    masks = []
    for item in patient.slices:
        candidates = SLICES.prediction_candidates((pred / patient.name, pred), item.name)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"{candidates[0]}: no prediction for slice {item.name} of {patient.name} "
                            f"(looked for {pred}/{NIFTI.prediction_name(patient.name)} and {SLICES.prediction_name('<slice>')} / "
                            f"<slice>{SLICES.prediction_ending})")
        masks.append(SLICES.read_mask(found))
    return masks


def score(pred: str | Path, truth: str | Path, out: str | Path, spacing: tuple[float, float, float] | None = None) -> dict:
    """Score a folder of predicted masks against truth: the ``slices.csv`` / ``patients.csv`` / summary of ``evaluate``.

    ``pred`` holds, per truth patient, ``<patient>_mask.nii.gz`` (as ``predict`` writes for NIfTI cases)
    or one mask file per slice, ``<slice>_pred.png`` or ``<slice>.png`` (0/255 or 0/1), in ``pred/<patient>/``
    or in ``pred`` itself. ``truth`` is anything with masks that :func:`~gliomaseg.data.sources.open_source`
    reads: a CSV of ``prepare``, a kaggle_3m folder, NIfTI cases with ``<case>_mask.nii.gz``.
    """
    pred = Path(pred)
    if not pred.is_dir():
        raise DataError(f"{pred}: prediction folder does not exist")
    patients, _ = open_source(truth, strict=True)
    slices, patient_scores, report = score_masks(((p, _prediction_slices(pred, p), truth_masks(p)) for p in patients), spacing)
    summary = {
        "checkpoint": None,
        "predictions": str(pred),  # as given: outputs name no folder of the machine
        "evaluated_csv": str(truth),
        "model_selection_csv": None,
        "held_out": None,
        "threshold": None,
        "model": f"predictions in {pred}",
        **report,
        "variants": {},
        "meaning": REPORT_MEANING,
        "reductions": REDUCTION_MEANING,
    }
    write_scores(out, summary, slices, patient_scores)
    return summary
