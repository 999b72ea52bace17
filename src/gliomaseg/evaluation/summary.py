"""What ``evaluate`` and ``score`` write: the per-slice and per-patient tables, ``summary.json`` and ``summary.md``
(nnU-Net's counts -> per case -> summary, the last step; no model here)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gliomaseg.core.io import run_folder, write_csv, write_text
from gliomaseg.evaluation.metrics import (
    NEUTRAL_MEANING,
)

# What write_scores puts in an output folder, in the order the terminal lists them.
SCORE_FILES = SLICES_CSV, PATIENTS_CSV, SUMMARY_JSON, SUMMARY_MD, DICE_CHART = (
    "slices.csv", "patients.csv", "summary.json", "summary.md", "patient_dice.png")
HEADLINE = [
    "iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "dice_imagewise_tumour_slices", "iou_micro",
    "dice_micro", "patient_dice_mean", "patient_dice_median", "patient_hd95_mean", "patient_hd95_median",
]


def write_scores(out: str | Path, summary: dict, slices: pd.DataFrame, patients: pd.DataFrame) -> None:
    """``slices.csv``, ``patients.csv``, ``summary.json``, ``summary.md`` and ``patient_dice.png`` in ``out``, as one
    run (:func:`gliomaseg.core.io.run_folder`): a rerun killed half way leaves the previous five, not a mix."""
    from gliomaseg.evaluation.charts import plot_bars

    out = Path(out)
    # Paths relative to the output folder: the files name no folder of the machine they were made on
    # (read_slices_csv resolves them against the CSV's folder again).
    slices = slices.copy()
    for column in ("image_path", "mask_path"):
        if column in slices:
            slices[column] = [v if not isinstance(v, str) or not v else os.path.relpath(Path(v).resolve(), out.resolve())
                              for v in slices[column]]
    with run_folder(out, "evaluate") as work:
        write_csv(slices, work / SLICES_CSV)
        write_csv(patients, work / PATIENTS_CSV)
        write_text(json.dumps(summary, indent=2, default=_json_number), work / SUMMARY_JSON)
        write_text(summary_markdown(summary), work / SUMMARY_MD)
        ordered = patients.sort_values("dice_3d")
        plot_bars(list(ordered["patient"]), list(ordered["dice_3d"]), work / DICE_CHART,
                  title="Per-patient 3D Dice (all slices of a patient as one volume)", ylabel="Dice")


def _json_number(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(type(value))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def summary_markdown(summary: dict, headline_only: bool = False) -> str:
    """``summary.md``: the evaluated data, the headline numbers and their meaning, the TTA / post-processing table, then
    every smp metric by reduction; ``headline_only``: the text before that last section (what the terminal shows)."""
    lines = [f"# Evaluation of {summary['model']}", ""]
    if summary.get("checkpoint"):
        lines.append(f"- checkpoint: `{summary['checkpoint']}`")
    if summary.get("predictions"):
        lines.append(f"- predictions: `{summary['predictions']}`")
    lines.append(f"- evaluated on: `{summary['evaluated_csv']}` ({summary['slices']} slices, {summary['tumour_slices']} with tumour, "
                 f"{summary['patients']} patients)")
    overlap = summary.get("overlap") or {}
    for role, counts in overlap.items():
        if counts is None:
            lines.append(f"- the checkpoint's {role.replace('_', '-')} CSV is not on this machine: overlap unknown.")
        else:
            lines.append(f"- {counts['slices']} of these slices and {counts['patients']} of these patients are in the {role.replace('_', '-')} "
                         f"CSV `{counts['csv']}`.")
    training, selection = overlap.get("training"), overlap.get("model_selection")
    if training and training["patients"]:
        lines.append("- **not held out**: the checkpoint was trained on some of these patients; these scores say little "
                     "about new patients.")
    if selection and selection["patients"]:
        lines.append("- **these are validation scores**: the checkpoint was picked on some of these patients, so they are "
                     "optimistic; report a held-out set as the final number.")
    elif summary["held_out"]:
        lines.append("- held out: no evaluated patient was used for training or model selection.")
    if not summary["volumes"]:
        lines.append("- the patients' slices here are not whole volumes (an image split?): HD95 and the largest-3D-component "
                     "step are left out, and patient Dice is over each patient's evaluated slices.")
    lines.append(f"- {summary['empty_slices']} slices have no tumour; {summary['empty_slices_predicted_empty']} of them were predicted empty "
                 "and score 1 in the image-wise numbers.")
    lines += ["", "| number | value | meaning |", "|---|---|---|"]
    for key in HEADLINE:
        lines.append(f"| {key} | {_fmt(summary.get(key))} | {summary['meaning'].get(key, '')} |")
    if summary["volumes"]:
        lines.append(f"\nHD95 in {summary['hd95_unit']}; {summary['patients_missed_tumour']} patient(s) with a missed tumour and "
                     f"{summary['patients_false_tumour']} with a false tumour score the diagonal of their volume (worst case); "
                     f"{summary['patient_hd95_undefined']} patient(s) without tumour predicted empty have no HD95.")
    if summary["variants"]:
        lines += ["", "## With TTA and post-processing (same slices)", "",
                  "| variant | iou_imagewise | dice_imagewise | iou_imagewise_tumour_slices | iou_micro | dice_micro | patient_dice_mean |",
                  "|---|---|---|---|---|---|---|"]
        for name, scores in summary["variants"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(scores[k]) for k in ("iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "iou_micro", "dice_micro", "patient_dice_mean")) + " |")
    if headline_only:
        return "\n".join(lines) + "\n\n"
    lines += ["", "## All smp metrics by reduction", "", "| metric | " + " | ".join(summary["reductions"]) + " |",
              "|---|" + "---|" * len(summary["reductions"])]
    for metric, values in summary["smp"].items():
        lines.append(f"| {metric} | " + " | ".join(_fmt(values[r]) for r in summary["reductions"]) + " |")
    lines += ["", "Reductions:"] + [f"- `{k}`: {v}" for k, v in summary["reductions"].items()]
    lines.append(f"- 0/0: {NEUTRAL_MEANING}.")
    return "\n".join(lines) + "\n"


def score_table(summary: dict) -> str:
    """The few numbers of a score run a reader looks at first, one a line."""
    def number(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None or value != value else f"{value:.4f}"

    lines = [f"{summary['patients']} patient(s), {summary['slices']} slice(s) ({summary['tumour_slices']} with tumour)",
             f"  per-patient 3D Dice   mean {number('patient_dice_mean')}  median {number('patient_dice_median')}",
             f"  dataset Dice (micro)  {number('dice_micro')}",
             f"  tumour-slice IoU      {number('iou_imagewise_tumour_slices')}"]
    if summary.get("volumes"):
        lines.append(f"  per-patient HD95      mean {number('patient_hd95_mean')}  median {number('patient_hd95_median')} "
                     f"({summary['hd95_unit']})")
    return "\n".join(lines)
