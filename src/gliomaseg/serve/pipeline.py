"""One case through the model, into what the page shows: contours per slice and numbers per patient."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from gliomaseg.core.defaults import DEFAULT_BATCH_SIZE
from gliomaseg.core.errors import InputWarning
from gliomaseg.core.units import check_spacing, spacing_text, volume_ml
from gliomaseg.data.sequences import describe, missing_sequences, warning_text
from gliomaseg.evaluation.scorer import PatientScorer
from gliomaseg.inference.postprocess import PostProcess
from gliomaseg.inference.segment import segment as segment_slices
from gliomaseg.serve.uploads import Case


@dataclass(frozen=True)
class SegmentOptions:
    """How the model's output becomes a mask; the same meaning as ``gliomaseg predict``'s options."""

    threshold: float | None = None
    tta: str = "none"
    postprocess: PostProcess = field(default_factory=PostProcess)
    batch_size: int = DEFAULT_BATCH_SIZE


def segment(predictor, images: list[np.ndarray], options: SegmentOptions) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The viewer's only path to the model: :func:`gliomaseg.inference.segment.segment`, as ``gliomaseg predict`` calls it.

    Args:
        images: one patient's uint8 RGB slices (H, W, 3) in slice order.
    Returns:
        ``(probabilities, masks)``: float32 (H, W) and uint8 0/1 (H, W) per slice, at each slice's own size.
    """
    return segment_slices(predictor, images, options.threshold, options.tta, options.postprocess, options.batch_size)


def contours(mask: np.ndarray) -> list[list[list[int]]]:
    """Outlines of a 0/1 mask (H, W) as polygons of ``[x, y]`` pixel positions, holes included."""
    found, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).tolist() for c in found]


@dataclass
class CaseResult:
    """A case with its prediction; ``summary`` and ``slices`` are what the page receives as JSON."""

    case: Case
    masks: list[np.ndarray]
    summary: dict
    slices: list[dict]
    probabilities: list[np.ndarray] = field(default_factory=list)  # uint8 (H, W), probability x 255, for the map


def analyse(predictor, case: Case, options: SegmentOptions, spacing: Sequence[float] | None = None) -> CaseResult:
    """Predict one case; per slice its contours and pixel counts, per patient its tumour volume and Dice.

    ``dice_3d`` treats the patient's slices as one volume and is given only when every slice has a truth mask.
    The volume is in mL only with a known spacing: ``spacing`` (x, y, z in mm), else a volume's header when its
    units are a length; otherwise ``spacing`` says "spacing unknown".
    """
    missing = missing_sequences(case.images)
    if set(missing) - set(case.reported_missing):  # a reader that filled a sequence has said so already
        warnings.warn(warning_text(case.name, missing), InputWarning, stacklevel=2)
    probabilities, masks = segment(predictor, case.images, options)
    slices = []
    scorer = PatientScorer()  # the slices that have a truth mask
    for name, image, truth, probability, mask in zip(case.slice_names, case.images, case.truths, probabilities, masks):
        row = {
            "name": name, "height": int(image.shape[0]), "width": int(image.shape[1]),
            "tumour_pixels": int(mask.sum()), "max_probability": round(float(probability.max()), 4),
            "prediction": contours(mask), "truth": None,
        }
        if truth is not None:
            counts = scorer.add_masks(case.name, mask, truth)
            row.update(truth=contours(truth), true_pixels=int(truth.sum()), dice=round(counts.dice, 4))
        slices.append(row)
    summary = {
        "patient": case.name, "kind": case.kind, "slices": len(masks),
        "slices_with_tumour": int(sum(bool(m.any()) for m in masks)),
        "tumour_slice_numbers": [k + 1 for k, m in enumerate(masks) if m.any()],
        "tumour_volume_voxels": int(sum(int(m.sum()) for m in masks)),
        "missing_sequences": describe(missing),
    }
    known = check_spacing(spacing) or (case.geometry.spacing if case.geometry is not None else None)
    summary["spacing"] = spacing_text(known)
    if known is not None:
        summary["tumour_volume_ml"] = volume_ml(summary["tumour_volume_voxels"], known)
        summary["voxel_mm"] = [round(z, 4) for z in known]
    if case.truths and all(t is not None for t in case.truths):
        summary["true_volume_voxels"] = int(sum(int(t.sum()) for t in case.truths if t is not None))
        summary["slices_with_true_tumour"] = int(sum(bool(t.any()) for t in case.truths if t is not None))
        if known is not None:
            summary["true_volume_ml"] = volume_ml(summary["true_volume_voxels"], known)
        summary["dice_3d"] = round(scorer.patient_scores("dice")[case.name], 4)
    return CaseResult(case, masks, summary, slices, [np.round(p * 255).astype(np.uint8) for p in probabilities])
