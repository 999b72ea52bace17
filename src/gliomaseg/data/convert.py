"""``gliomaseg convert``: kaggle_3m patients (or any slice source with masks) to NIfTI, for 3D Slicer, ITK-SNAP and friends,
or to DICOM (three MR series and a DICOM SEG of the truth), for PACS viewers and to try the DICOM path on."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gliomaseg.core.defaults import NIFTI_LAYOUTS
from gliomaseg.core.errors import DataError, InputWarning
from gliomaseg.core.io import run_folder, write_csv, write_text
from gliomaseg.core.units import check_spacing, spacing_text
from gliomaseg.data.formats.dicom_series import DICOM
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.nifti import write_slices_volume
from gliomaseg.data.sources import PatientInput, open_source


def _arrays(patient: PatientInput, *, need_masks: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """A patient's slices (uint8 RGB, one size) and masks (uint8 0/1), checked; masks ``None`` when it has none and they are optional."""
    images, masks = [], []
    for item in patient.slices:
        image, mask = item.image(lenient=False), item.mask()
        if images and image.shape != images[0].shape:
            raise DataError(f"{item.image_path}: slice of shape {image.shape} differs from the patient's first slice {images[0].shape}; "
                            "a volume needs slices of one size")
        if mask is not None and mask.shape != image.shape[:2]:
            raise DataError(f"{item.mask_path}: mask shape {mask.shape} does not match its image {item.image_path} of shape {image.shape[:2]}")
        images.append(image)
        masks.append(mask)
    missing = [item for item, mask in zip(patient.slices, masks) if mask is None]
    if missing and (need_masks or len(missing) < len(masks)):
        raise DataError(f"{missing[0].image_path}: image has no mask (expected a file ending in _mask.tif)")
    return images, (None if missing else masks)


def convert_to_nifti(inputs: str | Path, out: str | Path, *, spacing: Sequence[float] | None = None,
                     layout: str = "channels") -> pd.DataFrame:
    """Write each patient as ``<patient>.nii.gz`` (uint8, (X, Y, Z, 3)) and ``<patient>_mask.nii.gz`` (uint8 0/1, (X, Y, Z)).

    The layout is the one :mod:`gliomaseg.data.nifti` reads back (LPS, slices in slice-number order along
    the third axis), so predicting a converted case gives the masks of its slices. ``layout="sequences"``
    writes ``<patient>_pre-contrast``, ``_flair`` and ``_post-contrast.nii.gz`` (3D) instead of the 4D file.
    ``spacing`` (x, y, z in mm) is recorded in the headers; without it the units are "unknown", as kaggle_3m
    records none (a volume then has no mL).
    A patient whose slices differ in size, or that lacks a mask, stops the conversion with an error naming the file.
    Returns one row per patient (``patient, slices, tumour_slices, image, mask``), also written to ``converted.csv``
    (its paths relative to ``out``; the returned table's as paths under ``out``).

    The run goes through :func:`~gliomaseg.core.io.run_folder`: every case (image and mask) is written into a
    hidden folder and moved into ``out`` at the end, so a killed run leaves no temporary file or image without its
    mask in ``out``, and a rerun removes the previous run's cases.
    """
    if layout not in NIFTI_LAYOUTS:
        raise DataError(f"{out}: layout {layout!r}; expected {' or '.join(NIFTI_LAYOUTS)}")
    try:
        spacing = check_spacing(spacing)
    except ValueError as exc:
        raise DataError(f"--spacing: {exc}") from exc
    patients, _ = open_source(inputs, strict=True)
    out = Path(out)
    with run_folder(out, "convert") as work:
        table = _convert(patients, work, spacing, layout)
        write_csv(table, work / "converted.csv")
    for column in ("image", "mask"):
        table[column] = [";".join(str(out / part) for part in v.split(";")) for v in table[column]]
    return table


def _convert(patients, work: Path, spacing: Sequence[float] | None, layout: str) -> pd.DataFrame:
    rows = []
    for patient in patients:
        if patient.geometry is not None:
            raise DataError(f"{patient.slices[0].image_path}: already a volume (NIfTI or DICOM case)")
        images, masks = _arrays(patient, need_masks=True)
        files = ([work / f"{patient.name}{NIFTI.prediction_ending}"] if layout == NIFTI_LAYOUTS[0]
                 else NIFTI.sequence_files(work, patient.name))
        image_out, mask_out = write_slices_volume(images, masks, files, work / NIFTI.mask_name(patient.name), spacing=spacing)
        rows.append({"patient": patient.name, "slices": len(images), "tumour_slices": sum(int(m.any()) for m in masks),
                     "image": ";".join(p.relative_to(work).as_posix() for p in image_out),
                     "mask": mask_out.relative_to(work).as_posix(), "spacing": spacing_text(spacing)})
    return pd.DataFrame(rows)


def convert_to_dicom(inputs: str | Path, out: str | Path, spacing: tuple[float, float, float] | None = None) -> pd.DataFrame:
    """Write each patient as a DICOM case: ``<patient>/pre|flair|post/<k>.dcm``, ``<patient>/sequences.txt`` naming them,
    and, when it has masks, its truth as ``<patient>/<patient>_seg.dcm`` (a DICOM SEG, MANUAL segment).

    Three MR series, one per channel (pre-contrast, FLAIR, post-contrast), of one synthetic study with
    ``spacing`` (x, y, z in mm: column width, row height, slice step; the order of ``--spacing``): for kaggle_3m slices, which
    record none, 1 mm unless given; a NIfTI case keeps its header's voxel size unless given.
    ``gliomaseg predict`` on ``<patient>/`` gives exactly the masks of the slices.
    Returns one row per patient (``patient, slices, tumour_slices, folder, segmentation, spacing_mm``), also in ``converted.csv``.
    """
    patients, _ = open_source(inputs, strict=True)
    out = Path(out)
    with run_folder(out, "convert") as work:  # the rerun rule of every command (README "Reruns")
        table = _convert_dicom(patients, work, spacing)
        write_csv(table, work / "converted.csv")
    for column in ("folder", "segmentation"):
        table[column] = [None if v is None else str(out / v) for v in table[column]]
    return table


def _convert_dicom(patients, work: Path, spacing: tuple[float, float, float] | None) -> pd.DataFrame:
    from pydicom.uid import generate_uid

    from gliomaseg.data import dicom

    rows = []
    for patient in patients:
        if isinstance(patient.geometry, dicom.DicomGeometry):
            raise DataError(f"{patient.slices[0].image_path}: already a DICOM case")
        images, masks = _arrays(patient, need_masks=False)
        source = "given"
        if spacing is not None:
            between = (float(spacing[1]), float(spacing[0]), float(spacing[2]))  # (row, column, slice) from X Y Z
        elif patient.geometry is not None and patient.geometry.spacing is not None:
            left, posterior, superior = patient.geometry.spacing
            between, source = (posterior, left, superior), "header"
        else:
            # DICOM needs a spacing; none is known (kaggle_3m records none), so 1 mm is stated, and said to be assumed.
            between, source = (1.0, 1.0, 1.0), "assumed"
            warnings.warn(f"{patient.name}: no voxel size known, so the DICOM series state 1 x 1 x 1 mm, an assumption "
                          "(give --spacing X Y Z in mm); volumes in mL from them are not measurements", InputWarning, stacklevel=2)
        if min(between) <= 0:
            raise DataError(f"{patient.name}: spacing {between} mm must be positive")
        volume = np.stack(images)  # (N, rows, cols, 3), LPS slice order
        date = re.search(r"(\d{8})$", patient.name)
        study = generate_uid(entropy_srcs=["gliomaseg study", patient.name])
        frame = generate_uid(entropy_srcs=["gliomaseg frame", patient.name])
        folder = work / patient.name
        for number, role in enumerate(dicom.ROLES):
            dicom.write_mr_series(volume[..., number], folder / role, spacing=between, patient=patient.name, study_uid=study,
                                  frame_of_reference=frame, series_number=number + 1, description=role,
                                  study_date=date.group(1) if date else "")
        write_text("".join(f"{role}={role}\n" for role in dicom.ROLES), folder / dicom.SEQUENCES_FILE)
        seg = None
        if masks is not None:
            case = dicom.read_sequences({role: folder / role for role in dicom.ROLES}, name=patient.name)
            seg = DICOM.write_mask(masks, folder / DICOM.mask_name(patient.name), case.geometry).relative_to(work).as_posix()
        rows.append({"patient": patient.name, "slices": len(images),
                     "tumour_slices": sum(int(m.any()) for m in masks) if masks else None, "folder": folder.relative_to(work).as_posix(),
                     "segmentation": seg, "spacing_mm": " x ".join(f"{v:g}" for v in (between[1], between[0], between[2])),
                     "spacing_source": source})
    return pd.DataFrame(rows)
