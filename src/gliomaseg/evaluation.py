"""``gliomaseg evaluate``: per-slice and per-patient results plus a summary, nnU-Net style.

Writes ``slices.csv`` (one row a slice), ``patients.csv`` (one row a patient), ``summary.json``,
``summary.md`` and ``patient_dice.png``. Predictions are made at the model's size and resized back,
so masks are compared at their own resolution.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from gliomaseg.data.files import read_slice_pair, read_slices_csv, write_csv, write_text
from gliomaseg.inference.postprocess import ALL_STEPS, PostProcess
from gliomaseg.inference.segment import DEFAULT_BATCH_SIZE, masks_from_probabilities, segment
from gliomaseg.metrics import REDUCTION_MEANING, REPORT_MEANING, confusion_numpy, dataset_report, hd95, patient_table, slice_table

HEADLINE = [
    "iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "dice_imagewise_tumour_slices", "iou_micro",
    "dice_micro", "patient_dice_mean", "patient_dice_median", "patient_hd95_px_mean", "patient_hd95_px_median",
]


def _variant_scores(counts: list[tuple[str, int, int, int, int]]) -> dict[str, float]:
    slices = slice_table(pd.DataFrame(counts, columns=["patient", "tp", "fp", "fn", "tn"]))
    report = dataset_report(slices, patient_table(slices), with_smp=False)
    return {k: report[k] for k in ("iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "iou_micro", "dice_micro", "patient_dice_mean")}


def evaluate(
    checkpoint: str | Path,
    csv_path: str | Path,
    out: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    compare: bool = True,
    postprocess: PostProcess = ALL_STEPS,
    tta: str = "flip",
    device: str = "cpu",
    predictor=None,
) -> dict:
    """Evaluate a checkpoint on the slices of a CSV; returns the summary written to ``summary.json``.

    With ``compare``, the summary also holds a table of the same scores with TTA and with each
    post-processing step, on the same slices.
    """
    from gliomaseg.inference.predictor import load_checkpoint

    predictor = predictor or load_checkpoint(checkpoint, device=device)
    frame = read_slices_csv(csv_path)
    threshold = predictor.threshold
    variants: dict[str, PostProcess] = {"none": PostProcess()}
    if compare:
        variants.update({f"post:{name}": steps for name, steps in postprocess.single_steps().items()})
        variants["post:all"] = postprocess
    counts: dict[str, list] = {name: [] for name in variants}
    if compare:
        counts[f"tta:{tta}"] = []
    rows, hd = [], {}
    for patient, group in frame.groupby("patient", sort=False):
        pairs = [read_slice_pair(r.image_path, r.mask_path, expected_size=None) for r in group.itertuples()]
        truths = [mask for _, mask in pairs]
        images = [image for image, _ in pairs]
        probs, raw = segment(predictor, images, threshold, batch_size=batch_size)
        for name, steps in variants.items():
            masks = masks_from_probabilities(probs, threshold, steps) if steps.active else raw
            counts[name].extend((patient, *confusion_numpy(m, t)) for m, t in zip(masks, truths))
        if compare:
            _, tta_masks = segment(predictor, images, threshold, tta, batch_size=batch_size)
            counts[f"tta:{tta}"].extend((patient, *confusion_numpy(m, t)) for m, t in zip(tta_masks, truths))
        if len({m.shape for m in raw}) == 1:
            hd[patient] = hd95(np.stack(raw), np.stack(truths))
        for row, prob, mask, truth in zip(group.itertuples(), probs, raw, truths):
            rows.append({"patient": patient, "slice": getattr(row, "slice", None), "image_path": row.image_path, "mask_path": row.mask_path,
                         "true_pixels": int(truth.sum()), "predicted_pixels": int(mask.sum()), "max_probability": float(prob.max())})
    slices = slice_table(pd.concat([pd.DataFrame(rows), pd.DataFrame(counts["none"], columns=["patient", "tp", "fp", "fn", "tn"]).drop(columns="patient")], axis=1))
    patients = patient_table(slices, hd)
    report = dataset_report(slices, patients)
    info = getattr(predictor, "info", None)
    selection_csv = getattr(info, "val_csv", None)
    evaluated = str(Path(csv_path).resolve())
    summary = {
        "checkpoint": str(checkpoint),
        "evaluated_csv": evaluated,
        "model_selection_csv": selection_csv,
        "held_out": None if selection_csv is None else selection_csv != evaluated,
        "threshold": threshold,
        "model": None if info is None else f"{info.arch}-{info.encoder} @ {info.image_size}px",
        **report,
        "variants": {name: _variant_scores(c) for name, c in counts.items()} if compare else {},
        "meaning": REPORT_MEANING,
        "reductions": REDUCTION_MEANING,
    }
    out = Path(out)
    write_csv(slices, out / "slices.csv")
    write_csv(patients, out / "patients.csv")
    write_text(json.dumps(summary, indent=2, default=_json_number), out / "summary.json")
    write_text(summary_markdown(summary), out / "summary.md")
    from gliomaseg.visualization import plot_bars

    ordered = patients.sort_values("dice_3d")
    plot_bars(list(ordered["patient"]), list(ordered["dice_3d"]), out / "patient_dice.png",
              title="Per-patient 3D Dice (all slices of a patient as one volume)", ylabel="Dice")
    return summary


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


def summary_markdown(summary: dict) -> str:
    lines = [f"# Evaluation of {summary['model']}", ""]
    lines.append(f"- checkpoint: `{summary['checkpoint']}`")
    lines.append(f"- evaluated on: `{summary['evaluated_csv']}` ({summary['slices']} slices, {summary['tumour_slices']} with tumour, "
                 f"{summary['patients']} patients)")
    if summary["held_out"] is False:
        lines.append(f"- **these are validation scores**: the checkpoint was picked on this same CSV (`{summary['model_selection_csv']}`), "
                     "so they are optimistic; report a held-out set as the final number.")
    elif summary["held_out"]:
        lines.append(f"- model selection used `{summary['model_selection_csv']}`, not this CSV.")
    lines.append(f"- {summary['empty_slices']} slices have no tumour; {summary['empty_slices_predicted_empty']} of them were predicted empty "
                 "and score 1 in the image-wise numbers.")
    lines += ["", "| number | value | meaning |", "|---|---|---|"]
    for key in HEADLINE:
        lines.append(f"| {key} | {_fmt(summary.get(key))} | {summary['meaning'].get(key, '')} |")
    if summary["patient_hd95_undefined"]:
        lines.append(f"\nHD95 is undefined for {summary['patient_hd95_undefined']} patient(s) (an empty prediction or an empty truth).")
    if summary["variants"]:
        lines += ["", "## With TTA and post-processing (same slices)", "",
                  "| variant | iou_imagewise | dice_imagewise | iou_imagewise_tumour_slices | iou_micro | dice_micro | patient_dice_mean |",
                  "|---|---|---|---|---|---|---|"]
        for name, scores in summary["variants"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(scores[k]) for k in ("iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "iou_micro", "dice_micro", "patient_dice_mean")) + " |")
    lines += ["", "## All smp metrics by reduction", "", "| metric | " + " | ".join(summary["reductions"]) + " |",
              "|---|" + "---|" * len(summary["reductions"])]
    for metric, values in summary["smp"].items():
        lines.append(f"| {metric} | " + " | ".join(_fmt(values[r]) for r in summary["reductions"]) + " |")
    lines += ["", "Reductions:"] + [f"- `{k}`: {v}" for k, v in summary["reductions"].items()]
    lines.append("- image-wise reductions score a slice with nothing to find and nothing found as 1 (zero_division=1).")
    return "\n".join(lines) + "\n"
