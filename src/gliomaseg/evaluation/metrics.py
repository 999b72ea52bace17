"""Segmentation metrics from per-slice confusion counts; the dataset report's meanings.

The per-slice, per-patient and dataset tables and their reductions are :mod:`gliomaseg.evaluation.scorer`'s
(:class:`~gliomaseg.evaluation.scorer.PatientScorer`); this module holds the formulas they use.

Counts come from smp's ``get_stats`` in binary mode: tp, fp, fn, tn per slice, each (N, 1).
Reductions (smp's names):

- ``micro``: sum the counts over all slices, then compute once (dataset-wise). An empty slice
  predicted empty adds only true negatives, so it neither helps nor hurts IoU or Dice; false
  positives on empty slices do count (they lower IoU and Dice).
- ``macro`` / ``weighted``: per class over the summed counts, then averaged (with one class,
  binary: the same as micro).
- ``micro-imagewise`` / ``macro-imagewise`` / ``weighted-imagewise``: compute per slice, then average
  over slices. A slice with tp = fp = fn = 0 (no tumour, none predicted) has IoU 0/0; we score it
  1, as the case study's mIoU does, which is why image-wise IoU runs high on a dataset where most
  slices are empty.

A 0/0 gets each metric's neutral value (:data:`NEUTRAL`): the score of a perfect answer, so 1 for
the scores (IoU, Dice, sensitivity, precision, ...) and 0 for the miss and false-alarm rates (FNR,
FPR, FDR, FOR). smp's single ``zero_division`` would score an empty slice predicted empty FNR = 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# torch and smp are imported inside the functions that need them, so that the torch-free
# inference path (ONNX Runtime) can use the plain-number metrics below.
METRIC_NAMES = (
        "fbeta_score", "f1_score", "iou_score", "accuracy", "precision", "recall", "sensitivity", "specificity",
        "balanced_accuracy", "positive_predictive_value", "negative_predictive_value", "false_negative_rate",
        "false_positive_rate", "false_discovery_rate", "false_omission_rate", "positive_likelihood_ratio",
        "negative_likelihood_ratio",
)
# The value of a metric whose ratio is 0/0 (nothing to find, nothing found): a perfect answer's score.
# The likelihood ratios get 1, "no evidence either way" (the odds are unchanged).
NEUTRAL = {name: 1.0 for name in METRIC_NAMES} | {
    "false_negative_rate": 0.0, "false_positive_rate": 0.0, "false_discovery_rate": 0.0, "false_omission_rate": 0.0,
}
NEUTRAL_MEANING = ("a 0/0 (nothing to find, nothing found) scores as a perfect answer: 1 for IoU, Dice, sensitivity, "
                   "specificity, precision and the other scores, 0 for false_negative_rate, false_positive_rate, "
                   "false_discovery_rate and false_omission_rate, 1 (no evidence) for the likelihood ratios")
REDUCTIONS = ("micro", "macro", "weighted", "micro-imagewise", "macro-imagewise", "weighted-imagewise")
REDUCTION_MEANING = {
    "micro": "counts summed over all slices, then one score (dataset-wise)",
    "macro": "per class over summed counts, then the mean over classes (one class: equals micro)",
    "weighted": "per class over summed counts, weighted by class weight (one class: equals micro)",
    "micro-imagewise": "one score per slice over its classes' summed counts, then the mean over slices",
    "macro-imagewise": "one score per slice and class, mean over slices, then over classes",
    "weighted-imagewise": "as macro-imagewise with class weights (one class: equals macro-imagewise)",
}


def confusion(prediction, target) -> tuple:
    """tp, fp, fn, tn per slice, each (N, 1) int64 tensors, from binary mask tensors (N, 1, H, W)."""
    import segmentation_models_pytorch as smp

    return smp.metrics.get_stats(prediction.long(), target.long(), mode="binary")


def all_metrics(tp, fp, fn, tn, zero_division: float | None = None) -> dict[str, dict[str, float]]:
    """Every smp metric under every reduction: ``{metric: {reduction: value}}``.

    Args:
        tp, fp, fn, tn: (N, C) integer tensors (or arrays), one row per slice.
        zero_division: the value of every 0/0; ``None`` (default): each metric's :data:`NEUTRAL` value.
    """
    import segmentation_models_pytorch as smp
    import torch

    tp, fp, fn, tn = (torch.as_tensor(np.array(x, dtype=np.int64)).reshape(len(x), -1) for x in (tp, fp, fn, tn))
    weights = [1.0] * tp.shape[1]
    out: dict[str, dict[str, float]] = {}
    for name in METRIC_NAMES:
        fn_ = getattr(smp.metrics, name)
        out[name] = {}
        for reduction in REDUCTIONS:
            kwargs = {"class_weights": weights} if "weighted" in reduction else {}
            neutral = NEUTRAL[name] if zero_division is None else zero_division
            value = fn_(tp, fp, fn, tn, reduction=reduction, zero_division=neutral, **kwargs)
            out[name][reduction] = float(value)
    return out


def ratio(numerator: float, denominator: float, empty: float = 1.0) -> float:
    """numerator / denominator, ``empty`` when both are 0 (nothing to find, nothing found)."""
    return empty if denominator == 0 else numerator / denominator


def iou(tp, fp, fn) -> float:
    return ratio(tp, tp + fp + fn)


def dice(tp, fp, fn) -> float:
    return ratio(2 * tp, 2 * tp + fp + fn)


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance between two masks' surfaces.

    Works on 2D slices or 3D volumes (slices stacked in slice order). ``spacing`` gives the size of a
    step along each axis (e.g. mm: slice step, row, column); without it the unit is the pixel and the
    slice step counts as one pixel. NaN when both are empty, infinity when exactly one is (see
    :func:`worst_case_distance`).
    """
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if not prediction.any() and not truth.any():
        return math.nan
    if not prediction.any() or not truth.any():
        return math.inf
    from scipy import ndimage  # here, not at the top: a predict without a truth never needs it (0.3 s to import)

    pred_surface = prediction ^ ndimage.binary_erosion(prediction)
    true_surface = truth ^ ndimage.binary_erosion(truth)
    to_truth = ndimage.distance_transform_edt(~true_surface, sampling=spacing)[pred_surface]
    to_prediction = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[true_surface]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95)))


def worst_case_distance(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The diagonal of an array of ``shape`` (times ``spacing``): the HD95 given to a missed or a false tumour.

    BraTS-style evaluations score such a case with the image diagonal instead of dropping it, so that
    missing a tumour never scores better than finding it badly.
    """
    steps = spacing if spacing is not None else [1.0] * len(shape)
    return float(math.sqrt(sum((n * step) ** 2 for n, step in zip(shape, steps))))


def confusion_numpy(prediction: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """tp, fp, fn, tn of two binary masks of any shape (numpy, no torch)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(prediction & truth))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return tp, fp, fn, truth.size - tp - fp - fn


REPORT_MEANING = {
    "iou_imagewise": "mean per-slice IoU over all slices; an empty slice predicted empty scores 1 (the case study's mIoU)",
    "dice_imagewise": "mean per-slice Dice over all slices; empty predicted empty scores 1",
    "iou_imagewise_tumour_slices": "mean per-slice IoU over slices whose mask has tumour only: no free 1s",
    "dice_imagewise_tumour_slices": "mean per-slice Dice over slices whose mask has tumour only",
    "iou_micro": "dataset-wise IoU: tp, fp, fn summed over every slice, then one IoU; an empty slice predicted empty adds "
                 "nothing, false positives on empty slices count",
    "dice_micro": "dataset-wise Dice from the summed counts",
    "patient_dice_mean": "mean over patients of the 3D Dice of each patient's slices as one volume",
    "patient_dice_median": "median of the per-patient 3D Dice",
    "patient_dice_mean_tumour_patients": "mean 3D Dice over patients who have tumour",
    "patient_hd95_mean": "mean per-patient 3D HD95 (in the unit of hd95_unit) over patients with a tumour in truth or prediction; "
                         "a missed or false tumour scores the volume's diagonal (worst case)",
    "patient_hd95_median": "median per-patient 3D HD95, same patients and worst case",
    "patients_missed_tumour": "patients with tumour whose prediction is empty",
    "patients_false_tumour": "patients without tumour with a predicted tumour",
}
