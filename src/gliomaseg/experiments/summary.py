"""An experiment's results: results.csv, results.md, the cross-validation summary and the comparison chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gliomaseg.core.errors import DataError
from gliomaseg.core.io import write_csv, write_text
from gliomaseg.experiments.spec import FOLD_SPLIT, REFERENCE_LABEL, Experiment


def _has_scores(row: dict, experiment: Experiment) -> bool:
    """Whether a finished run's saved row carries what the experiment's flags ask for (else it is scored again)."""
    return (not experiment.score_last or "patient_dice_mean_last" in row) and \
        (not experiment.score_variants or any(key.startswith("variant_") for key in row))


def _numbers(column: pd.Series) -> list[float | None]:
    return [float(v) if isinstance(v, (int, float)) and not math.isnan(v) else None for v in column]


def write_results(results: pd.DataFrame, root: Path, experiment: Experiment, preset: str, out: Path) -> None:
    """``results.csv``, ``results.md`` and ``results.png`` (per-patient Dice, and image-wise IoU beside the case study)."""
    from gliomaseg.evaluation.charts import plot_bar_panels

    other = experiment.compare_with
    if other and (out / other / "results.csv").is_file() and "patient_dice_mean" in results:
        # Each run beside the same-named run of the other experiment (lowlr beside architectures), with the difference.
        beside = pd.read_csv(out / other / "results.csv").set_index("run")
        for column in ("patient_dice_mean", "iou_imagewise"):
            if column in beside:
                results[f"{other}_{column}"] = results["run"].map(beside[column])
        if f"{other}_patient_dice_mean" in results:
            results[f"patient_dice_mean_minus_{other}"] = (pd.to_numeric(results["patient_dice_mean"], errors="coerce")
                                                           - pd.to_numeric(results[f"{other}_patient_dice_mean"], errors="coerce"))
    write_csv(results, root / "results.csv")
    folds = crossval_summary(results, root)
    write_text(results_markdown(results, experiment, preset, folds), root / "results.md")
    if "patient_dice_mean" in results:
        labels = list(results["run"])
        dice = {"mean": _numbers(results["patient_dice_mean"]), "median": _numbers(results["patient_dice_median"])}
        if other and f"{other}_patient_dice_mean" in results:
            dice = {"this experiment": dice["mean"], other: _numbers(results[f"{other}_patient_dice_mean"])}
        iou = {"ours": _numbers(results["iou_imagewise"])}
        if results["reference_iou"].notna().any():
            iou["case study"] = _numbers(results["reference_iou"])
        plot_bar_panels(labels, [("per-patient Dice (validation patients)", dice), ("image-wise IoU (empty slice = 1)", iou)],
                        root / "results.png", title=f"{experiment.name}: {experiment.description}")


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def crossval_summary(results: pd.DataFrame, root: Path) -> dict | None:
    """Mean and spread over the ``foldK`` runs, and per-patient Dice pooled over all their held-out patients.

    Written to ``crossval.json``; None when the experiment has no fold runs. Failed folds are named, and
    each mean says over how many folds it is. ``best`` numbers come from the epoch its own held-out patients
    picked; ``last`` numbers involve no pick.
    """
    if "split" not in results or "status" not in results:
        return None
    is_fold = results["split"].astype(str).str.fullmatch(FOLD_SPLIT.pattern)
    folds = results[is_fold & (results["status"] == "done")]
    if not is_fold.any():
        return None
    summary: dict[str, Any] = {"folds": list(folds["run"]), "failed_folds": list(results.loc[is_fold & (results["status"] != "done"), "run"]),
                               "note": "best: best.ckpt, picked on the fold's own held-out patients (optimistic); last: last.ckpt, no pick; "
                                       "variant_*: best.ckpt with that TTA or post-processing step"}
    scored = ["patient_dice_mean", "patient_dice_mean_last", "patient_dice_median", "iou_imagewise_tumour_slices", "iou_imagewise"]
    for column in scored + [c for c in folds if c.startswith("variant_")]:
        if column in folds:
            values = pd.to_numeric(folds[column], errors="coerce").dropna()
            if len(values):
                summary[column] = {"mean": float(values.mean()), "sd_over_folds": _finite(values.std(ddof=1)) if len(values) > 1 else None,
                                   "folds": int(len(values))}
    for name, folder in (("best", "eval"), ("last", "eval_last")):
        files = [root / run / folder / "patients.csv" for run in folds["run"]]
        if files and all(f.is_file() for f in files):
            dice = fold_patients(root, folder=folder, runs=list(folds["run"]))["dice_3d"]
            summary[f"pooled_patient_dice_{name}"] = {"patients": int(len(dice)), "mean": float(dice.mean()),
                                                      "median": float(dice.median()), "sd": _finite(dice.std(ddof=1))}
    write_text(json.dumps(summary, indent=2), root / "crossval.json")
    return summary


LOW_DICE, LOW_DICE_MIN_TUMOUR_SLICES = 0.3, 10  # a failure on a patient with a real tumour, not a 2-slice one


def fold_patients(source: Path, folder: str = "eval_last", runs: list[str] | None = None) -> pd.DataFrame:
    """Per-patient rows (``fold, patient, dice_3d, tumour_slices, ...``) of a cross-validation, pooled over its folds.

    ``source``: an experiment folder (``fold*/<folder>/patients.csv``; ``eval_last`` is each fold's last epoch, no
    checkpoint picked on its held-out patients; ``runs`` limits it to those fold runs) or a pooled ``patients.csv``
    with a ``fold`` column (as committed under ``docs/results/<experiment>/``). A patient held out by two folds
    (folds of different ``prepare --folds`` runs) is refused: the pooled numbers would count it twice.
    """
    source = Path(source)
    if source.is_file():
        frame = _patients_csv(source)
        if "fold" not in frame:
            raise DataError(f"{source}: a pooled patients.csv needs a fold column")
    elif source.is_dir():
        files = (sorted(source.glob(f"fold*/{folder}/patients.csv")) if runs is None
                 else [source / run / folder / "patients.csv" for run in runs])
        if not files:
            raise DataError(f"{source}: no fold*/{folder}/patients.csv (has any fold finished?)")
        frame = pd.concat([_patients_csv(f).assign(fold=f.parent.parent.name) for f in files], ignore_index=True)
    else:
        raise DataError(f"{source}: neither an experiment folder nor a pooled patients.csv")
    repeated = sorted(frame.loc[frame["patient"].duplicated(), "patient"].unique())
    if repeated:
        raise DataError(f"{source}: patients held out by more than one fold ({', '.join(repeated[:5])}); were the folds re-made?")
    return frame


def _patients_csv(path: Path) -> pd.DataFrame:
    """A per-patient table of ``evaluate``: patient names as text (as data_info.csv has them), a finite Dice each."""
    try:
        frame = pd.read_csv(path, dtype={"patient": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__})") from exc
    missing = [c for c in ("patient", "dice_3d") if c not in frame]
    if missing:
        raise DataError(f"{path}: no {' and no '.join(missing)} column; expected evaluate's patients.csv")
    frame["dice_3d"] = pd.to_numeric(frame["dice_3d"], errors="coerce")
    bad = frame.loc[frame["dice_3d"].isna(), "patient"].tolist()
    if bad:
        raise DataError(f"{path}: patient {bad[0]} has no numeric dice_3d" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return frame


def missing_sequence_patients(info_csv: Path) -> set[str]:
    """Patients of a ``data_info.csv`` (``prepare``) with a slice whose pre- or post-contrast is a copy of FLAIR."""
    try:
        info = pd.read_csv(info_csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{info_csv}: not a readable CSV ({type(exc).__name__})") from exc
    if "missing_sequences" not in info or "patient" not in info:
        raise DataError(f"{info_csv}: no patient or missing_sequences column (an older prepare's? run prepare again)")
    return set(info.loc[info["missing_sequences"] != "", "patient"])


def crossval_headline(patients: pd.DataFrame, missing: set[str], experiment: str, worst: int = 5) -> dict[str, Any]:
    """What a model card leads with: the recipe's per-patient Dice over every held-out patient of a cross-validation.

    Args:
        patients: :func:`fold_patients` rows, one per held-out patient.
        missing: patients with a missing sequence (:func:`missing_sequence_patients`), reported apart.
        experiment: the experiment's name, so a reader can find its results.
    Returns plain JSON data: pooled mean and median, the mean of each fold, the worst patients, the patients
    with at least 10 tumour slices below 0.3, and the missing-sequence patients against the others.
    """
    dice = patients["dice_3d"].astype(float)
    by_fold = patients.groupby("fold")["dice_3d"].mean()
    rows = patients.assign(missing_sequence=patients["patient"].isin(missing))
    tumour = pd.to_numeric(rows["tumour_slices"], errors="coerce") if "tumour_slices" in rows else None
    # Without tumour-slice counts the failures cannot be told from small tumours: None, not "none".
    low = None if tumour is None else rows[(tumour >= LOW_DICE_MIN_TUMOUR_SLICES) & (rows["dice_3d"] < LOW_DICE)]

    def listed(frame: pd.DataFrame) -> list[dict[str, Any]]:
        def count(index) -> int | None:
            return None if tumour is None or pd.isna(tumour[index]) else int(tumour[index])

        return [{"patient": r["patient"], "fold": r["fold"], "dice": round(float(r["dice_3d"]), 4),
                 "tumour_slices": count(i), "missing_sequence": bool(r["missing_sequence"])} for i, r in frame.iterrows()]

    with_missing, others = rows[rows["missing_sequence"]], rows[~rows["missing_sequence"]]
    return {
        "experiment": experiment,
        "folds": int(by_fold.size),
        "patients": int(len(rows)),
        "reduction": "per-patient 3D Dice (each patient's slices as one volume), mean and median over the held-out "
                     "patients of every fold; each fold scored at its last epoch, so no checkpoint was picked on them",
        "mean": round(float(dice.mean()), 4),
        "median": round(float(dice.median()), 4),
        "fold_means": {str(k): round(float(v), 4) for k, v in by_fold.items()},
        "worst": listed(rows.nsmallest(worst, "dice_3d")),
        "low": None if low is None else listed(low),
        "low_rule": f"at least {LOW_DICE_MIN_TUMOUR_SLICES} tumour slices and Dice below {LOW_DICE}",
        "missing_sequence": {"patients": int(len(with_missing)),
                             "mean": round(float(with_missing["dice_3d"].mean()), 4) if len(with_missing) else None,
                             "others_mean": round(float(others["dice_3d"].mean()), 4) if len(others) else None},
    }


COLUMNS = ["run", "patient_dice_mean", "patient_dice_median", "patient_dice_mean_last", "iou_imagewise_tumour_slices", "iou_micro",
           "iou_imagewise", "reference_iou", "dice_imagewise", "best_epoch", "epochs", "train_seconds", "images_per_s", "parameters_M",
           "gflops", "status"]


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None) -> list[str]:
    """Lines of a Markdown table; floats with 3 decimals, missing values as ``-``."""
    columns = columns or list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: pd.DataFrame, experiment: Experiment, preset: str, folds: dict | None = None) -> str:
    other = experiment.compare_with
    compared = [c for c in (f"{other}_patient_dice_mean", f"patient_dice_mean_minus_{other}", f"{other}_iou_imagewise") if other and c in results]
    columns = [c for c in COLUMNS if c in results] + compared + [c for c in results if c.startswith("variant_")]
    lines = [f"# Experiment `{experiment.name}`: {experiment.description}", "",
             f"Preset `{preset}`. Scores are on each run's validation CSV, the same CSV that picked `best.ckpt`.", ""]
    lines += markdown_table(results, columns)
    if folds:
        failed = f" ({', '.join(folds['failed_folds'])} failed)" if folds["failed_folds"] else ""
        lines += ["", f"## Over the {len(folds['folds'])} finished folds{failed}", "",
                  "Each fold's patients are held out of its training; `best` is still picked on them, `last` is not.", ""]
        for key, value in folds.items():
            if key.startswith("pooled_"):
                sd = "-" if value["sd"] is None else f"{value['sd']:.3f}"
                lines.append(f"- `{key}`: {value['mean']:.3f} mean, {value['median']:.3f} median, sd {sd} over {value['patients']} patients")
            elif isinstance(value, dict):
                spread = "-" if value["sd_over_folds"] is None else f"{value['sd_over_folds']:.3f}"
                lines.append(f"- `{key}`: {value['mean']:.3f} mean over {value['folds']} folds, sd {spread}")
    lines += ["", "- `iou_imagewise`: mean per-slice IoU, an empty slice predicted empty scores 1 (the case study's mIoU).",
              "- `iou_imagewise_tumour_slices`: the same over slices with tumour only (no free 1s).",
              "- `iou_micro`: dataset-wise IoU from counts summed over all slices.",
              "- `patient_dice_*`: 3D Dice of each validation patient's slices as one volume, mean and median over patients.",
              f"- `reference_iou`: {REFERENCE_LABEL}.",
              "- `patient_dice_mean_last`: the same for `last.ckpt`, which no validation score picked.",
              "- `variant_*`: per-patient Dice mean of `best.ckpt` with that TTA or post-processing step (evaluate's table).",
              "- `best_epoch`: the epoch (from 1) that picked `best.ckpt`; `epochs`: epochs trained (fewer under `max_time`).",
              "- `images_per_s`: training images per second, data loading included; `gflops`: forward pass of one image."]
    if compared:
        lines.append(f"- `{other}_*`: the same-named run of experiment `{other}`; `patient_dice_mean_minus_{other}`: this run's minus that one.")
    return "\n".join(lines) + "\n"
