"""``gliomaseg predict``: masks, contour overlays, per-patient GIFs and tables for slices, folders or CSVs.

Torch-free: it runs any :class:`~gliomaseg.inference.predictor.Predictor`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pandas as pd

from gliomaseg.data.files import IMAGE_SUFFIXES, read_image, read_mask, read_slices_csv, write_csv
from gliomaseg.errors import DataError
from gliomaseg.inference.postprocess import PostProcess
from gliomaseg.inference.segment import DEFAULT_BATCH_SIZE, segment
from gliomaseg.metrics import confusion_numpy, dice, iou
from gliomaseg.visualization import encode_png, natural_key, overlay_contours, write_gif

_NUMBER = re.compile(r"_(\d+)$")


@dataclass
class SliceInput:
    patient: str
    image_path: Path
    mask_path: Path | None = None
    slice: int | None = None


@dataclass
class PredictResult:
    predictions: pd.DataFrame
    patients: pd.DataFrame
    skipped: pd.DataFrame
    out: Path
    written: list[Path] = field(default_factory=list)


def _slice_number(path: Path) -> int | None:
    match = _NUMBER.search(path.stem)
    return int(match.group(1)) if match else None


def _mask_beside(image: Path) -> Path | None:
    for suffix in (image.suffix, ".tif", ".png"):
        candidate = image.with_name(f"{image.stem}_mask{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _scan_patient(folder: Path, skipped: list[tuple[str, str]]) -> list[SliceInput]:
    items = []
    for file in sorted(folder.iterdir(), key=natural_key):
        if file.name.startswith(".") or not file.is_file() or file.stem.endswith("_mask"):
            continue
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(file), f"unsupported format {file.suffix or '(none)'}; expected one of {', '.join(IMAGE_SUFFIXES)}"))
            continue
        items.append(SliceInput(folder.name, file, _mask_beside(file), _slice_number(file)))
    return items


def collect_inputs(path: str | Path) -> tuple[list[SliceInput], list[tuple[str, str]]]:
    """Slices to predict from one slice, a patient folder, a kaggle_3m root or a CSV of ``prepare``.

    Returns ``(slices, skipped)``, slices grouped by patient and in numeric slice order.
    """
    path = Path(path)
    skipped: list[tuple[str, str]] = []
    if not path.exists():
        raise DataError(f"{path}: input does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            frame = read_slices_csv(path, require_mask=False, check_paths=False)
            items = [
                SliceInput(
                    str(row.patient), Path(row.image_path),
                    Path(row.mask_path) if "mask_path" in frame and isinstance(row.mask_path, str) and row.mask_path else None,
                    int(row.slice) if "slice" in frame else _slice_number(Path(row.image_path)),
                )
                for row in frame.itertuples()
            ]
        elif suffix in IMAGE_SUFFIXES:
            items = [SliceInput(path.parent.name or "input", path, _mask_beside(path), _slice_number(path))]
        else:
            raise DataError(f"{path}: unsupported input format {suffix or '(none)'}; give a slice ({', '.join(IMAGE_SUFFIXES)}), a folder or a CSV")
    else:
        items = _scan_patient(path, skipped)
        if not items:
            for folder in sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key):
                items.extend(_scan_patient(folder, skipped))
    if not items:
        raise DataError(f"{path}: no slices found (expected {', '.join(IMAGE_SUFFIXES)} files)")
    order = {name: i for i, name in enumerate(dict.fromkeys(item.patient for item in items))}
    items.sort(key=lambda s: (order[s.patient], s.slice if s.slice is not None else -1, natural_key(s.image_path.name)))
    return items, skipped


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array))
    return path


def _read_truth(item: SliceInput, shape: tuple[int, int]) -> np.ndarray | None:
    if item.mask_path is None or not item.mask_path.is_file():
        return None
    truth = read_mask(item.mask_path)
    if truth.shape != shape:
        raise DataError(f"{item.mask_path}: mask shape {truth.shape} does not match its image {item.image_path} of shape {shape}")
    return truth


def predict(
    predictor,
    inputs: str | Path,
    out: str | Path,
    *,
    threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: str = "none",
    postprocess: PostProcess | None = None,
    fps: float = 2.0,
    gifs: bool = True,
    overlays: bool = True,
) -> PredictResult:
    """Predict every slice under ``inputs`` and write masks, overlays, GIFs, ``predictions.csv``, ``patients.csv``."""
    items, skipped = collect_inputs(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threshold = predictor.threshold if threshold is None else threshold
    postprocess = postprocess or PostProcess()
    rows: list[dict] = []
    patient_rows: list[dict] = []
    written: list[Path] = []
    by_patient: dict[str, list[SliceInput]] = {}
    for item in items:
        by_patient.setdefault(item.patient, []).append(item)
    for patient, slices in by_patient.items():
        loaded: list[tuple[SliceInput, np.ndarray, np.ndarray | None]] = []
        for item in slices:
            try:
                image = read_image(item.image_path, lenient=True)
                loaded.append((item, image, _read_truth(item, image.shape[:2])))
            except DataError as exc:
                skipped.append((str(item.image_path), str(exc).partition(": ")[2] or str(exc)))
        if not loaded:
            continue
        probs, masks = segment(predictor, [image for _, image, _ in loaded], threshold, tta, postprocess, batch_size)
        frames = []
        folder = out / patient
        for (item, image, truth), prob, mask in zip(loaded, probs, masks):
            stem = item.image_path.stem
            row = {
                "patient": patient, "slice": item.slice, "image_path": str(item.image_path),
                "tumour_pixels": int(mask.sum()), "max_probability": float(prob.max()),
                "mask_out": str(_write_png(folder / f"{stem}_pred.png", mask * 255)),
            }
            if overlays or gifs:
                overlay = overlay_contours(image, prediction=mask, truth=truth, legend=True)
                frames.append(overlay)
            if overlays:
                row["overlay_out"] = str(_write_png(folder / f"{stem}_overlay.png", overlay))
            if truth is not None:
                tp, fp, fn, _ = confusion_numpy(mask, truth)
                row.update(true_pixels=int(truth.sum()), tp=tp, fp=fp, fn=fn, dice=dice(tp, fp, fn), iou=iou(tp, fp, fn))
            rows.append(row)
        patient_row = {
            "patient": patient,
            "slices": len(loaded),
            "slices_with_tumour": int(sum(m.any() for m in masks)),
            "tumour_volume_voxels": int(sum(int(m.sum()) for m in masks)),
        }
        patient_slices = rows[-len(loaded):]
        if all("tp" in r for r in patient_slices):
            tp, fp, fn = (sum(r[k] for r in patient_slices) for k in ("tp", "fp", "fn"))
            patient_row.update(true_volume_voxels=sum(r["true_pixels"] for r in patient_slices), dice_3d=dice(tp, fp, fn))
        if gifs and len({f.shape for f in frames}) == 1:
            patient_row["gif"] = str(write_gif(frames, folder / f"{patient}.gif", fps=fps))
        patient_rows.append(patient_row)
    predictions = pd.DataFrame(rows)
    patients = pd.DataFrame(patient_rows)
    skipped_frame = pd.DataFrame(skipped, columns=["path", "problem"])
    written.append(write_csv(predictions, out / "predictions.csv"))
    written.append(write_csv(patients, out / "patients.csv"))
    if len(skipped_frame):
        written.append(write_csv(skipped_frame, out / "skipped.csv"))
    return PredictResult(predictions, patients, skipped_frame, out, written)


def gif_from_folder(folder: str | Path, out: str | Path, fps: float = 2.0, pattern: Iterable[str] = IMAGE_SUFFIXES) -> Path:
    """Every image in ``folder`` into one GIF, in natural numeric order (2 before 10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder does not exist")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in tuple(pattern) and p.is_file()), key=natural_key)
    if not files:
        raise DataError(f"{folder}: no images to put in a GIF")
    frames = [read_image(p, lenient=True) for p in files]
    shape = frames[0].shape
    frames = [f if f.shape == shape else cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for f in frames]
    return write_gif(frames, out, fps=fps)
