"""The one scorer: per-slice confusion counts tagged by patient -> per-slice table -> per-patient table -> summary.

In the spirit of MONAI's Cumulative metrics: a :class:`PatientScorer` accumulates (``add``, ``add_masks``,
``extend``), then reads out (``slices``, ``patients``, ``patient_scores``, ``aggregate``, ``report``) and can be
``reset``. Every number is named by its reduction (:data:`SCORE_REDUCTIONS`). ``evaluate`` / ``score``, training's
validation, ``predict``, the viewer and the int8 / fp16 check all score through it, so a 0/0 means the same everywhere:
an empty truth predicted empty is a perfect score (:func:`~gliomaseg.evaluation.metrics.ratio`), for a slice, a patient
and the micro (dataset-wise) scores alike.

The formulas (:func:`~gliomaseg.evaluation.metrics.dice`, :func:`~gliomaseg.evaluation.metrics.iou`, the counts of
:func:`~gliomaseg.evaluation.metrics.confusion_numpy`) live in :mod:`gliomaseg.evaluation.metrics`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from gliomaseg.evaluation.metrics import all_metrics, confusion_numpy, dice, iou

COUNTS = ("tp", "fp", "fn", "tn")
# The order of the rows of the per-patient table, and so of patient_scores().
ORDERS = {
    "sorted": "patients sorted by name (evaluate, score, training's validation)",
    "first-seen": "patients in the order their first slice was added (the int8 / fp16 check: its worst patient is the "
                  "first of equal drops in CSV order)",
}
SCORE_METRICS = ("dice", "iou")
SCORE_REDUCTIONS = {
    "micro": "tp, fp, fn summed over every slice, then one score (dataset-wise); all empty predicted empty scores 1",
    "imagewise": "one score per slice (an empty slice predicted empty scores 1), then the mean over all slices",
    "imagewise-tumour-slices": "the mean per-slice score over slices whose truth has tumour (NaN when none has)",
    "patient-mean": "one 3D score per patient (its slices as one volume, counts summed), then the mean over patients",
    "patient-median": "the median of the per-patient 3D scores",
    "patient-mean-tumour-patients": "the mean 3D score over patients whose truth has tumour (NaN when none has)",
}


class SliceCounts(NamedTuple):
    """One slice's (or volume's) confusion counts, plain ints, and its scores."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def dice(self) -> float:
        return dice(self.tp, self.fp, self.fn)

    @property
    def iou(self) -> float:
        return iou(self.tp, self.fp, self.fn)


def slice_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Add per-slice ``iou``, ``dice`` (1 for an empty slice predicted empty) and ``has_tumour``."""
    rows = rows.copy()
    rows["has_tumour"] = (rows["tp"] + rows["fn"]) > 0
    rows["iou"] = [iou(tp, fp, fn) for tp, fp, fn in zip(rows["tp"], rows["fp"], rows["fn"])]
    rows["dice"] = [dice(tp, fp, fn) for tp, fp, fn in zip(rows["tp"], rows["fp"], rows["fn"])]
    return rows


def patient_table(slices: pd.DataFrame, hd95_by_patient: dict[str, float] | None = None, order: str = "sorted") -> pd.DataFrame:
    """One row a patient: its slices as one 3D volume (counts summed), Dice, IoU, HD95 and whether a tumour was
    missed (truth, empty prediction) or false (prediction, no truth). ``order``: one of :data:`ORDERS`."""
    if order not in ORDERS:
        raise ValueError(f"unknown patient order {order!r}; valid: {', '.join(ORDERS)}")
    grouped = slices.groupby("patient", sort=order == "sorted").agg(
        slices=("tp", "size"), tumour_slices=("has_tumour", "sum"), tp=("tp", "sum"), fp=("fp", "sum"),
        fn=("fn", "sum"), tn=("tn", "sum"),
    ).reset_index()
    grouped["has_tumour"] = (grouped["tp"] + grouped["fn"]) > 0
    grouped["dice_3d"] = [dice(tp, fp, fn) for tp, fp, fn in zip(grouped["tp"], grouped["fp"], grouped["fn"])]
    grouped["iou_3d"] = [iou(tp, fp, fn) for tp, fp, fn in zip(grouped["tp"], grouped["fp"], grouped["fn"])]
    predicted = (grouped["tp"] + grouped["fp"]) > 0
    grouped["missed_tumour"] = grouped["has_tumour"] & ~predicted
    grouped["false_tumour"] = ~grouped["has_tumour"] & predicted
    if hd95_by_patient is not None:
        grouped["hd95"] = grouped["patient"].map(hd95_by_patient)
    return grouped


def reduce(slices: pd.DataFrame, patients: pd.DataFrame, metric: str, reduction: str) -> float:
    """One number: ``metric`` (:data:`SCORE_METRICS`) under ``reduction`` (:data:`SCORE_REDUCTIONS`).

    Args:
        slices: :func:`slice_table` rows.
        patients: :func:`patient_table` rows of the same slices.
    """
    if metric not in SCORE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(SCORE_METRICS)}")
    score = dice if metric == "dice" else iou
    if reduction == "micro":
        tp, fp, fn = (int(slices[c].sum()) for c in ("tp", "fp", "fn"))
        return score(tp, fp, fn)
    if reduction == "imagewise":
        return float(slices[metric].mean())
    if reduction == "imagewise-tumour-slices":
        tumour = slices[slices["has_tumour"]]
        return float(tumour[metric].mean()) if len(tumour) else math.nan
    column = f"{metric}_3d"
    if reduction == "patient-mean":
        return float(patients[column].mean())
    if reduction == "patient-median":
        return float(patients[column].median())
    if reduction == "patient-mean-tumour-patients":
        with_tumour = patients[patients["has_tumour"]]
        return float(with_tumour[column].mean()) if len(with_tumour) else math.nan
    raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(SCORE_REDUCTIONS)}")


def _defined(values: Iterable[float]) -> list[float]:
    """The values that are not None or NaN (an infinite HD95 stays: it is a real, worst, result)."""
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def dataset_report(slices: pd.DataFrame, patients: pd.DataFrame, *, with_smp: bool = True) -> dict:
    """The numbers of a dataset report, each named by its reduction (:func:`reduce`).

    Args:
        slices: :func:`slice_table` rows (patient, tp, fp, fn, tn, iou, dice, has_tumour).
        patients: :func:`patient_table` rows.
        with_smp: also compute every smp metric under every reduction (``report["smp"]``).
    """
    tumour_slices = int(slices["has_tumour"].sum())
    hd = _defined(patients["hd95"]) if "hd95" in patients else []
    report = {
        "slices": len(slices),
        "tumour_slices": tumour_slices,
        "empty_slices": len(slices) - tumour_slices,
        "empty_slices_predicted_empty": int(((~slices["has_tumour"]) & (slices["fp"] == 0)).sum()),
        "patients": len(patients),
        "iou_imagewise": reduce(slices, patients, "iou", "imagewise"),
        "dice_imagewise": reduce(slices, patients, "dice", "imagewise"),
        "iou_imagewise_tumour_slices": reduce(slices, patients, "iou", "imagewise-tumour-slices"),
        "dice_imagewise_tumour_slices": reduce(slices, patients, "dice", "imagewise-tumour-slices"),
        "iou_micro": reduce(slices, patients, "iou", "micro"),
        "dice_micro": reduce(slices, patients, "dice", "micro"),
        "patient_dice_mean": reduce(slices, patients, "dice", "patient-mean"),
        "patient_dice_median": reduce(slices, patients, "dice", "patient-median"),
        "patient_dice_mean_tumour_patients": reduce(slices, patients, "dice", "patient-mean-tumour-patients"),
        "patient_hd95_mean": float(np.mean(hd)) if hd else math.nan,
        "patient_hd95_median": float(np.median(hd)) if hd else math.nan,
        "patient_hd95_undefined": int(len(patients) - len(hd)) if "hd95" in patients else 0,
        "patients_missed_tumour": int(patients["missed_tumour"].sum()),
        "patients_false_tumour": int(patients["false_tumour"].sum()),
    }
    if not with_smp:
        return report
    report["smp"] = all_metrics(
        slices["tp"].to_numpy()[:, None], slices["fp"].to_numpy()[:, None],
        slices["fn"].to_numpy()[:, None], slices["tn"].to_numpy()[:, None],
    )
    return report


class PatientScorer:
    """Cumulative per-patient scores: add each slice's counts tagged by its patient, then read the tables and numbers.

    Args:
        order: the order of the per-patient rows, one of :data:`ORDERS`.

    Example::

        scorer = PatientScorer()
        for patient, prediction, truth in slices:  # uint8 0/1 (H, W) masks
            scorer.add_masks(patient, prediction, truth)
        scorer.aggregate("dice", "patient-mean")
    """

    def __init__(self, order: str = "sorted") -> None:
        if order not in ORDERS:
            raise ValueError(f"unknown patient order {order!r}; valid: {', '.join(ORDERS)}")
        self.order = order
        self._rows: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def reset(self) -> None:
        self._rows.clear()

    def add(self, patient: str, tp, fp, fn, tn, **columns) -> SliceCounts:
        """One slice's counts; ``columns`` (e.g. its slice number and paths) come before the counts in :meth:`slices`."""
        self._rows.append({"patient": patient, **columns, "tp": tp, "fp": fp, "fn": fn, "tn": tn})
        return SliceCounts(tp, fp, fn, tn)

    def add_masks(self, patient: str, prediction: np.ndarray, truth: np.ndarray, **columns) -> SliceCounts:
        """One slice from its masks (0/1 or bool, any equal shape, usually (H, W)); returns its counts."""
        return self.add(patient, *confusion_numpy(prediction, truth), **columns)

    def extend(self, counts: Iterable[tuple]) -> PatientScorer:
        """Many slices as ``(patient, tp, fp, fn, tn)`` rows."""
        for patient, tp, fp, fn, tn in counts:
            self.add(patient, tp, fp, fn, tn)
        return self

    def slices(self) -> pd.DataFrame:
        """:func:`slice_table` of every slice added, in the order added."""
        frame = pd.DataFrame(self._rows) if self._rows else pd.DataFrame(columns=["patient", *COUNTS])
        return slice_table(frame)

    def patients(self, hd95_by_patient: dict[str, float] | None = None) -> pd.DataFrame:
        """:func:`patient_table` of the slices added, in this scorer's ``order``."""
        return patient_table(self.slices(), hd95_by_patient, self.order)

    def patient_scores(self, metric: str = "dice") -> dict[str, float]:
        """Each patient's 3D ``metric`` (:data:`SCORE_METRICS`; its slices as one volume), in this scorer's ``order``."""
        if metric not in SCORE_METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(SCORE_METRICS)}")
        table = self.patients()
        return {p: float(v) for p, v in zip(table["patient"], table[f"{metric}_3d"])}

    def tables(self, hd95_by_patient: dict[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(slices, patients)``: :meth:`slices` and :meth:`patients` of one pass."""
        slices = self.slices()
        return slices, patient_table(slices, hd95_by_patient, self.order)

    def aggregate(self, metric: str, reduction: str) -> float:
        """One number over everything added: ``metric`` under ``reduction`` (:func:`reduce`)."""
        return reduce(*self.tables(), metric, reduction)

    def aggregate_all(self, scores: dict[str, tuple[str, str]]) -> dict[str, float]:
        """Several numbers by name, each ``name: (metric, reduction)``, from one pass over the tables."""
        slices, patients = self.tables()
        return {name: reduce(slices, patients, metric, reduction) for name, (metric, reduction) in scores.items()}

    def report(self, hd95_by_patient: dict[str, float] | None = None, *, with_smp: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """``(slices, patients, report)``: the two tables and :func:`dataset_report` of them."""
        slices, patients = self.tables(hd95_by_patient)
        return slices, patients, dataset_report(slices, patients, with_smp=with_smp)
