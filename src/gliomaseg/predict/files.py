"""``gliomaseg predict``: masks, contour overlays, per-patient GIFs and tables for slices, folders, CSVs, NIfTI or DICOM cases.

Torch-free: it runs any :class:`~gliomaseg.inference.backend.Predictor`.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from gliomaseg.core.defaults import GIF_FPS
from gliomaseg.core.errors import DataError, GliomasegError, InputWarning
from gliomaseg.core.io import natural_key, run_folder, write_bytes, write_csv
from gliomaseg.core.parallel import thread_map
from gliomaseg.core.units import UNKNOWN, Spacing, check_spacing, spacing_text, volume_ml
from gliomaseg.data.dicom import DicomGeometry
from gliomaseg.data.files import IMAGE_SUFFIXES, read_image, scale_volume
from gliomaseg.data.formats.dicom_series import DICOM
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.formats.slice_files import SLICES
from gliomaseg.data.overlay import encode_png, label_frame, overlay_contours, write_gif
from gliomaseg.data.sequences import SequenceCheck, describe, warning_text
from gliomaseg.data.sources import SliceInput, open_source
from gliomaseg.evaluation.scorer import PatientScorer
from gliomaseg.inference.postprocess import PostProcess
from gliomaseg.inference.segment import DEFAULT_BATCH_SIZE, segment
from gliomaseg.predict.report import PatientReport, key_slice_indices, missing_note, write_run_report


@dataclass
class PredictResult:
    """The tables of a run; their output paths are ``out / <path in the CSV>`` (the CSVs hold paths relative to ``out``)."""

    predictions: pd.DataFrame
    patients: pd.DataFrame
    skipped: pd.DataFrame
    out: Path
    written: list[Path] = field(default_factory=list)
    report: Path | None = None


def resolve_inputs(paths: Sequence[Path] | None, sequences: Sequence[str] | None):
    """What ``predict --input`` / ``--sequences`` asks for: the paths (each must exist; checked before a model is opened),
    or the DICOM series that ``sequences`` names by role (``role=DIR`` entries or one mapping file); exactly one of the two."""
    if (paths is None) == (sequences is None):
        raise GliomasegError("predict needs --input PATH ... or --sequences pre=DIR flair=DIR post=DIR (or a mapping file), not both")
    if sequences is None:
        for path in paths:  # type: ignore[union-attr]
            if not Path(path).exists():
                raise GliomasegError(f"{path}: input does not exist")
        return paths
    from gliomaseg.data.dicom import parse_sequences, read_mapping_file

    if len(sequences) == 1 and "=" not in sequences[0]:
        return read_mapping_file(Path(sequences[0]))
    return parse_sequences(sequences)


def patient_line(row: dict) -> str:
    """One line per patient: slices with tumour, volume (mL only with a known spacing), Dice against truth, missing sequences."""
    ml = row.get("tumour_volume_ml")
    volume = (f"{row['tumour_volume_voxels']} voxels ({UNKNOWN})" if ml is None or ml != ml
              else f"{ml:g} mL ({row['tumour_volume_voxels']} voxels)")
    text = f"{row['patient']}: tumour predicted on {row['slices_with_tumour']} of {row['slices']} slice(s), volume {volume}"
    if row.get("dice_3d") is not None and row.get("dice_3d") == row.get("dice_3d"):
        text += f"; 3D Dice {row['dice_3d']:.3f} against the truth (tumour on {row['slices_with_true_tumour']} slice(s))"
    note = missing_note(row.get("missing_sequences"))
    return text + (f"; {note}" if note else "")


def closing_line(result: PredictResult, seconds: float, model: str | None = None) -> str:
    """How long it took, where each kind of output went, and (``model``) which model file ran."""
    out = result.out
    parts = [f"report {out / 'report.html'}"] if result.report else []
    parts.append(f"masks and overlays in {out}/<patient>/")
    if "gif" in result.patients:
        parts.append(f"GIFs {out}/<patient>/<patient>.gif")
    if "mask_volume" in result.patients:
        parts.append(f"mask volumes {out}/{NIFTI.prediction_name('<case>')}")
    if "segmentation" in result.patients:
        parts.append(f"DICOM SEG {out}/{DICOM.prediction_name('<case>')}")
    parts.append(f"tables {out / 'predictions.csv'}, {out / 'patients.csv'}")
    if model:
        parts.append(model)
    return (f"predicted {len(result.predictions)} slice(s) of {len(result.patients)} patient(s) in {seconds:.1f} s: "
            + "; ".join(parts))


def _write_png(path: Path, array: np.ndarray) -> Path:
    return write_bytes(encode_png(array), path)


def _read_truth(item: SliceInput, shape: tuple[int, int]) -> np.ndarray | None:
    truth = item.mask()
    if truth is not None and truth.shape != shape:
        raise DataError(f"{item.mask_path}: mask shape {truth.shape} does not match its image {item.image_path} of shape {shape}")
    return truth


def model_name(predictor) -> str:
    """``architecture-encoder`` of a predictor (what a DICOM SEG names as the algorithm's model)."""
    info = getattr(predictor, "info", None)
    return f"{info.arch}-{info.encoder}" if info is not None else type(predictor).__name__


def predict(
    predictor,
    inputs: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
    out: str | Path,
    *,
    threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: str = "none",
    postprocess: PostProcess | None = None,
    fps: float = GIF_FPS,
    gifs: bool = True,
    overlays: bool = True,
    allow_grayscale: bool = False,
    allow_16bit: bool = False,
    spacing: Sequence[float] | None = None,
    model: dict | None = None,
    report: bool = True,
) -> PredictResult:
    """Predict every slice of ``inputs`` (anything :func:`~gliomaseg.data.sources.open_source` reads).

    Writes per slice ``<slice>_pred.png`` (0/255 at the input's size; for a NIfTI case one
    ``<case>_mask.nii.gz`` instead, with the input's shape, affine and header; for a DICOM case also
    ``<case>_seg.dcm``, a DICOM Segmentation referencing its series), ``<slice>_overlay.png``,
    per patient ``<patient>.gif``, and ``predictions.csv``, ``patients.csv`` (``skipped.csv`` for bad files).
    Both tables have a ``missing_sequences`` column (:mod:`gliomaseg.data.sequences`: the slice's or the patient's
    channels that are a copy of FLAIR, empty when none); a patient with one gets an :class:`InputWarning`.
    Grayscale and 16-bit slices are skipped (listed in ``skipped.csv`` with the reason) unless
    ``allow_grayscale`` / ``allow_16bit``; allowed 16-bit slices are scaled per patient
    (:func:`~gliomaseg.data.files.scale_volume`). When nothing could be predicted, a :class:`DataError` names the first problem.
    The tables name the files written relative to ``out``; the run goes through
    :func:`~gliomaseg.core.io.run_folder` (a rerun replaces the previous run's files, a killed run leaves them), and
    ``out`` may not be inside an input folder. A failed run removes an output folder this call created.

    ``spacing`` (x, y, z in mm) sizes the voxels of every patient; without it a NIfTI or DICOM case's header gives its
    own when its units are a length, and any other patient's volume stays in voxels ("spacing unknown"). ``report``:
    write ``report.html`` (:mod:`~gliomaseg.predict.report`; ``model`` is its model summary). A single slice gets no GIF.
    """
    try:
        spacing = check_spacing(spacing)
    except ValueError as exc:
        raise DataError(f"--spacing: {exc}") from exc
    patients, skipped = open_source(inputs)
    out = Path(out)
    refuse_out_inside(out, inputs)
    created = not out.exists()
    try:
        return _predict(predictor, patients, skipped, out, threshold=threshold, batch_size=batch_size, tta=tta,
                        postprocess=postprocess, fps=fps, gifs=gifs, overlays=overlays, allow_grayscale=allow_grayscale,
                        allow_16bit=allow_16bit, spacing=spacing, model=model, report=report)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _predict(predictor, patients, skipped, out: Path, *, threshold, batch_size, tta, postprocess, fps, gifs, overlays,
             allow_grayscale, allow_16bit, spacing: Spacing | None, model: dict | None, report: bool) -> PredictResult:
    rows: list[dict] = []
    patient_rows: list[dict] = []
    reports: list[PatientReport] = []
    written: list[Path] = []
    report_path = None
    with run_folder(out, "predict") as work:
        _predict_into(work, predictor, patients, skipped, rows, patient_rows, reports if report else None, threshold,
                      batch_size, tta, postprocess, fps, gifs, overlays, allow_grayscale, allow_16bit, spacing)
        if not rows:  # raised inside the block: a run that predicted nothing leaves the previous run as it was
            more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
            raise DataError(f"{skipped[0][0]}: {skipped[0][1]}{more}; nothing was predicted")
        predictions = pd.DataFrame(rows)
        patient_table = pd.DataFrame(patient_rows)
        skipped_frame = pd.DataFrame(skipped, columns=["path", "problem"])
        tables = [(predictions, "predictions.csv"), (patient_table, "patients.csv")]
        tables += [(skipped_frame, "skipped.csv")] if len(skipped_frame) else []
        for frame, name in tables:
            write_csv(frame, work / name)
            written.append(out / name)
        if reports:
            outputs = [("masks and overlays", f"<patient>/{SLICES.prediction_name('<slice>')}, {SLICES.overlay_name('<slice>')}"),
                       ("tables", "predictions.csv, patients.csv")]
            if any("gif" in r for r in patient_rows):
                outputs.append(("GIFs", "<patient>/<patient>.gif"))
            if any("mask_volume" in r for r in patient_rows):
                outputs.append(("mask volumes", NIFTI.prediction_name("<case>")))
            if any("segmentation" in r for r in patient_rows):
                outputs.append(("DICOM segmentations", DICOM.prediction_name("<case>")))
            write_run_report(work / "report.html", reports, model or {"name": "unknown model"}, outputs)
            report_path = out / "report.html"
            written.append(report_path)
    # The files on disk name outputs relative to `out` (portable); the result names them as paths to open from here.
    for frame, columns in ((predictions, ("mask_out", "overlay_out")), (patient_table, ("gif", "mask_volume", "segmentation"))):
        for column in (c for c in columns if c in frame):
            frame[column] = [str(out / v) if isinstance(v, str) else v for v in frame[column]]
    return PredictResult(predictions, patient_table, skipped_frame, out, written, report_path)


def refuse_out_inside(out: Path, inputs: str | Path | Sequence[str | Path]) -> None:
    """Refuse an output folder that is an input folder or inside one: the next run would read its own overlays as slices."""
    if isinstance(inputs, Mapping):  # --sequences role=DIR[@SERIES]: the folders are the values
        inputs = [str(v).split("@")[0] for v in inputs.values()]
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    target = Path(out).resolve()
    for path in paths:
        if path.is_dir() and target.is_relative_to(path.resolve()):
            raise DataError(f"{out}: the output folder is inside the input folder {path}; its masks and overlays would be "
                            "read back as slices next time, so choose an output folder outside it")


def _predict_into(work: Path, predictor, patients, skipped, rows: list[dict], patient_rows: list[dict],
                  reports: list[PatientReport] | None, threshold, batch_size, tta, postprocess, fps, gifs, overlays,
                  allow_grayscale, allow_16bit, spacing: Spacing | None) -> None:
    """The body of :func:`predict`: every file into ``work``, the paths in the rows relative to it (the output folder);
    with ``reports``, each patient's entry of ``report.html`` appended to it."""

    def rel(path: Path) -> str:
        return Path(path).relative_to(work).as_posix()

    for patient in patients:
        def read(item: SliceInput) -> tuple[SliceInput, np.ndarray, np.ndarray | None] | DataError:
            try:
                image = item.image(allow_grayscale=allow_grayscale, allow_16bit=allow_16bit)
                return item, image, _read_truth(item, image.shape[:2])
            except DataError as exc:
                return exc

        loaded: list[tuple[SliceInput, np.ndarray, np.ndarray | None]] = []
        for item, result in zip(patient.slices, thread_map(read, patient.slices)):
            if isinstance(result, DataError):
                # "FILE: problem"; kept whole when FILE is another one (the slice's mask)
                skipped.append((str(item.image_path), str(result).removeprefix(f"{item.image_path}: ")))
            else:
                loaded.append(result)
        if not loaded:
            continue
        scaled = scale_volume([image for _, image, _ in loaded])
        loaded = [(item, image, truth) for (item, _, truth), image in zip(loaded, scaled)]
        # each slice's check, and the patient's as their sum: every slice is scanned once
        slice_checks = thread_map(lambda image: SequenceCheck().add(image), [image for _, image, _ in loaded])
        patient_check = SequenceCheck()
        for check in slice_checks:
            patient_check += check
        missing = patient_check.missing()
        if set(missing) - set(patient.reported_missing):  # a reader that filled a sequence has warned already
            warnings.warn(warning_text(patient.name, missing), InputWarning, stacklevel=2)
        probs, masks = segment(predictor, [image for _, image, _ in loaded], threshold, tta, postprocess, batch_size)
        folder = work / patient.name
        volume_out = None
        if patient.geometry is not None:
            volume_out = rel(NIFTI.write_mask(masks, work / NIFTI.prediction_name(patient.name), patient.geometry))
        seg_out = None
        if isinstance(patient.geometry, DicomGeometry):
            seg_out = rel(DICOM.write_mask(masks, work / DICOM.prediction_name(patient.name), patient.geometry, model=model_name(predictor)))
        def draw(index: int) -> tuple[dict, np.ndarray | None]:
            """One slice's files (mask, overlay) and GIF frame: per slice, so the slice threads share them out."""
            item, image, truth = loaded[index]
            files = {"mask_out": volume_out or rel(SLICES.write_mask(masks[index], folder / SLICES.prediction_name(item.name)))}
            frame = None
            if overlays or gifs:
                overlay = overlay_contours(image, prediction=masks[index], truth=truth, legend=True)
                frame = label_frame(overlay, f"slice {item.slice if item.slice is not None else index + 1}")
                if overlays:
                    files["overlay_out"] = rel(_write_png(folder / SLICES.overlay_name(item.name), overlay))
            return files, frame

        drawn = thread_map(draw, range(len(loaded)))
        frames = [frame for _, frame in drawn if frame is not None]
        first = len(rows)
        scorer = PatientScorer()  # this patient's slices that have a truth mask
        patient_spacing = spacing or (patient.geometry.spacing if patient.geometry is not None else None)
        for (item, image, truth), prob, mask, check, (files, _) in zip(loaded, probs, masks, slice_checks, drawn):
            row = {
                "patient": patient.name, "slice": item.slice, "image_path": str(item.image_path),
                "tumour_pixels": int(mask.sum()), "max_probability": float(prob.max()),
                "missing_sequences": describe(check.missing()),
                **files,
            }
            if truth is not None:
                counts = scorer.add_masks(patient.name, mask, truth)
                row.update(true_pixels=int(truth.sum()), tp=counts.tp, fp=counts.fp, fn=counts.fn, dice=counts.dice, iou=counts.iou)
            rows.append(row)
        patient_row = {
            "patient": patient.name,
            "slices": len(loaded),
            "slices_with_tumour": int(sum(m.any() for m in masks)),
            "tumour_volume_voxels": int(sum(int(m.sum()) for m in masks)),
            "tumour_volume_ml": volume_ml(int(sum(int(m.sum()) for m in masks)), patient_spacing),
            "spacing": spacing_text(patient_spacing),
            "missing_sequences": describe(missing),
        }
        patient_slices = rows[first:]
        if all("tp" in r for r in patient_slices):
            true_voxels = sum(r["true_pixels"] for r in patient_slices)
            patient_row.update(true_volume_voxels=true_voxels, true_volume_ml=volume_ml(true_voxels, patient_spacing),
                               slices_with_true_tumour=sum(int(r["true_pixels"] > 0) for r in patient_slices),
                               dice_3d=scorer.patient_scores("dice")[patient.name])
        if volume_out:
            patient_row["mask_volume"] = volume_out
        if seg_out:
            patient_row["segmentation"] = seg_out
        gif = None
        if gifs and len(frames) > 1 and len({f.shape for f in frames}) == 1:
            gif = write_gif(frames, folder / f"{patient.name}.gif", fps=fps)
            patient_row["gif"] = rel(gif)
        patient_rows.append(patient_row)
        if reports is not None:
            reports.append(PatientReport(
                patient.name, len(loaded), patient_row["slices_with_tumour"], patient_row["tumour_volume_voxels"], patient_spacing,
                patient_row.get("slices_with_true_tumour"), patient_row.get("true_volume_voxels"), patient_row.get("dice_3d"),
                patient_row["missing_sequences"],
                [(label, loaded[i][0].slice if loaded[i][0].slice is not None else i + 1,
                  encode_png(overlay_contours(loaded[i][1], prediction=masks[i], truth=loaded[i][2], legend=True)))
                 for label, i in key_slice_indices(masks)],
                gif.read_bytes() if gif is not None else None))


def gif_from_folder(folder: str | Path, out: str | Path, fps: float = GIF_FPS, pattern: Iterable[str] = IMAGE_SUFFIXES) -> Path:
    """Every image in ``folder`` into one GIF, in natural numeric order (2 before 10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder does not exist")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in tuple(pattern) and p.is_file()), key=natural_key)
    if not files:
        raise DataError(f"{folder}: no images to put in a GIF")
    frames = scale_volume([read_image(p, lenient=True, allow_grayscale=True, allow_16bit=True) for p in files])
    shape = frames[0].shape
    frames = [f if f.shape == shape else cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for f in frames]
    return write_gif(frames, out, fps=fps)
