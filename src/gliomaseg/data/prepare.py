"""Turn a kaggle_3m-style folder tree (read through :mod:`gliomaseg.data.sources`) into CSVs and split it by patient (or, on purpose, by slice).

Outputs (all written atomically, and only after every slice was validated):
``data_info.csv`` (patient, slice, image_path, mask_path, diagnosis, missing_sequences), ``data_train.csv`` and
``data_val.csv`` for the patient split, ``data_train_split_by_img.csv`` / ``data_val_split_by_img.csv``
for the slice split, ``data_folds.csv`` (with a ``fold`` column) and ``data_fold<k>_train.csv`` /
``data_fold<k>_val.csv`` for cross-validation, and
``skipped.csv`` when ``skip_bad`` dropped slices.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from sklearn.model_selection import KFold, train_test_split

from gliomaseg.core.defaults import SPLIT_SEED, TRAIN_SIZE
from gliomaseg.core.errors import DataError, InputWarning
from gliomaseg.core.io import moved, run_folder, write_csv
from gliomaseg.data.files import SLICE_SIZE, read_slice_pair
from gliomaseg.data.sequences import SequenceCheck, describe, warning_text
from gliomaseg.data.sources import open_source

# The case study's columns, then the patient's sequences that are a copy of FLAIR (gliomaseg.data.sequences).
INFO_COLUMNS = ["patient", "slice", "image_path", "mask_path", "diagnosis", "missing_sequences"]


@dataclass
class PrepareResult:
    info: pd.DataFrame
    train: pd.DataFrame
    val: pd.DataFrame
    summary: pd.DataFrame
    skipped: pd.DataFrame
    written: list[Path] = field(default_factory=list)
    folds: pd.DataFrame | None = None


def scan_folder(data_path: str | Path, *, skip_bad: bool = False, expected_size: tuple[int, int] | None = SLICE_SIZE):
    """Find and validate every slice under ``data_path``.

    Returns ``(info, skipped)``: ``info`` has :data:`INFO_COLUMNS`, sorted by patient and then by
    slice number (numerically); ``skipped`` lists ``path, problem`` for slices left out. Without
    ``skip_bad`` the first problem raises :class:`DataError` and nothing is returned.
    """
    root = Path(data_path)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    try:
        patients, problems = open_source(root)
    except DataError:
        patients, problems = [], []
    rows: list[dict] = []
    for patient in patients:
        check, first = SequenceCheck(), len(rows)
        if patient.geometry is not None:
            raise DataError(f"{patient.slices[0].image_path}: prepare reads kaggle_3m slice files; NIfTI cases can be predicted "
                            "and scored, but not prepared for training")
        for item in patient.slices:
            if item.slice is None:
                problems.append((str(item.image_path), "no slice number in the file name (expected <patient>_<n>.tif)"))
                continue
            if item.mask_path is None:
                problems.append((str(item.image_path), "image has no mask (expected a file ending in _mask.tif)"))
                continue
            try:
                image, mask = read_slice_pair(item.image_path, item.mask_path, expected_size)
            except DataError as exc:
                problems.append(_split_problem(exc, item.image_path))
                continue
            rows.append(
                {
                    "patient": patient.name,
                    "slice": item.slice,
                    "image_path": str(item.image_path.resolve()),
                    "mask_path": str(item.mask_path.resolve()),
                    "diagnosis": int(mask.any()),
                }
            )
            check.add(image)
        missing = check.missing()
        if missing and len(rows) > first:
            warnings.warn(warning_text(patient.name, missing), InputWarning, stacklevel=2)
        for row in rows[first:]:
            row["missing_sequences"] = describe(missing)
    if problems and not skip_bad:
        path, problem = problems[0]
        more = f" ({len(problems) - 1} more problem(s); --skip-bad skips them and lists them in skipped.csv)"
        raise DataError(f"{path}: {problem}" + (more if len(problems) > 1 else ""))
    for path, problem in problems:
        warnings.warn(f"skipped {path}: {problem}", stacklevel=2)
    if not rows:
        raise DataError(f"{root}: no usable slices found (expected <patient>/<patient>_<n>.tif with _mask.tif)")
    info = pd.DataFrame(rows, columns=INFO_COLUMNS).sort_values(["patient", "slice"], kind="stable")
    skipped = pd.DataFrame(problems, columns=["path", "problem"])
    return info.reset_index(drop=True), skipped


def _split_problem(exc: DataError, fallback: Path) -> tuple[str, str]:
    text = str(exc)
    path, sep, problem = text.partition(": ")
    return (path, problem) if sep else (str(fallback), text)


def split_by_patient(info: pd.DataFrame, train_size: float = TRAIN_SIZE, seed: int = SPLIT_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The case study's split: ``train_test_split`` over the sorted patient groups.

    On the full 110-patient kaggle_3m this gives 88/22 patients and 3151/778 slices.
    """
    patients = sorted(info["patient"].unique())
    if len(patients) < 2:
        raise DataError(f"a patient split needs at least 2 patients, found {len(patients)}")
    train_patients, val_patients = train_test_split(patients, train_size=train_size, random_state=seed)
    train = info[info["patient"].isin(set(train_patients))]
    val = info[info["patient"].isin(set(val_patients))]
    return train.reset_index(drop=True), val.reset_index(drop=True)


def split_by_image(info: pd.DataFrame, train_size: float = TRAIN_SIZE, seed: int = SPLIT_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slices at random, ignoring patients: slices of one patient land on both sides (leakage, on purpose)."""
    train, val = train_test_split(info, train_size=train_size, random_state=seed)
    return train.sort_index().reset_index(drop=True), val.sort_index().reset_index(drop=True)


FOLD_CSV = "data_fold{fold}_{part}.csv"  # part: train or val; train with --train-csv / --val-csv


def assign_folds(info: pd.DataFrame, folds: int, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """Add a ``fold`` column: K patient-grouped folds, each patient in exactly one fold."""
    patients = sorted(info["patient"].unique())
    if folds < 2 or folds > len(patients):
        raise DataError(f"--folds must be between 2 and the number of patients ({len(patients)}), got {folds}")
    fold_of: dict[str, int] = {}
    for fold, (_, held) in enumerate(KFold(n_splits=folds, shuffle=True, random_state=seed).split(patients)):
        fold_of.update({patients[i]: fold for i in held})
    out = info.copy()
    out["fold"] = out["patient"].map(fold_of).astype(int)
    return out


def summarize(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Patients, slices and tumour / no-tumour slices per split, and the patients with a missing sequence."""
    rows = []
    for name, frame in splits.items():
        tumour = int(frame["diagnosis"].sum())
        rows.append(
            {
                "split": name,
                "patients": int(frame["patient"].nunique()),
                "slices": len(frame),
                "tumour_slices": tumour,
                "no_tumour_slices": len(frame) - tumour,
                "missing_sequence_patients": int(frame.loc[frame["missing_sequences"] != "", "patient"].nunique())
                if "missing_sequences" in frame else 0,
            }
        )
    return pd.DataFrame(rows)


def prepare(
    data_path: str | Path,
    out: str | Path,
    *,
    split: Literal["patient", "image"] = "patient",
    train_size: float = TRAIN_SIZE,
    seed: int = SPLIT_SEED,
    folds: int | None = None,
    skip_bad: bool = False,
    plots: bool = True,
) -> PrepareResult:
    """Scan, validate, split and write the CSVs (and plots) of a kaggle_3m-style folder."""
    if not 0.0 < train_size < 1.0:
        raise DataError(f"--train-size must be between 0 and 1, got {train_size}")
    info, skipped = scan_folder(data_path, skip_bad=skip_bad)
    if split == "patient":
        train, val = split_by_patient(info, train_size, seed)
        names = ("data_train.csv", "data_val.csv")
    elif split == "image":
        train, val = split_by_image(info, train_size, seed)
        names = ("data_train_split_by_img.csv", "data_val_split_by_img.csv")
    else:
        raise DataError(f"--split must be 'patient' or 'image', got {split!r}")
    folded = assign_folds(info, folds, seed) if folds else None
    out = Path(out)
    with run_folder(out, "prepare") as work:  # a rerun with fewer folds, or no bad slices, leaves none of the old files
        written = [write_csv(info, work / "data_info.csv"), write_csv(train, work / names[0]), write_csv(val, work / names[1])]
        if folded is not None:
            written.append(write_csv(folded, work / "data_folds.csv"))
            for fold in range(folds):
                held = folded["fold"] == fold
                written.append(write_csv(folded[~held].drop(columns="fold"), work / FOLD_CSV.format(fold=fold, part="train")))
                written.append(write_csv(folded[held].drop(columns="fold"), work / FOLD_CSV.format(fold=fold, part="val")))
        if len(skipped):
            written.append(write_csv(skipped, work / "skipped.csv"))
        summary = summarize({"train": train, "val": val, "all": info})
        written.append(write_csv(summary, work / "summary.csv"))
        if plots:
            from gliomaseg.data.charts import plot_patient_slices, plot_sample_slices

            written.append(plot_patient_slices(info, work / "slices_per_patient.png"))
            written.append(plot_sample_slices(info, work / "sample_slices.png"))
        written = [moved(p, work, out) for p in written]
    return PrepareResult(info=info, train=train, val=val, summary=summary, skipped=skipped, written=written, folds=folded)
