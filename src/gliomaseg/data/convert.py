"""``gliomaseg convert``: kaggle_3m patients (or any slice source with masks) to NIfTI, for 3D Slicer, ITK-SNAP and friends."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gliomaseg.data.files import run_folder, write_csv
from gliomaseg.data.nifti import write_slices_volume
from gliomaseg.data.sources import open_source
from gliomaseg.errors import DataError


def convert_to_nifti(inputs: str | Path, out: str | Path) -> pd.DataFrame:
    """Write each patient as ``<patient>.nii.gz`` (uint8, (X, Y, Z, 3)) and ``<patient>_mask.nii.gz`` (uint8 0/1, (X, Y, Z)).

    The layout is the one :mod:`gliomaseg.data.nifti` reads back (LPS, 1 mm voxels, slices in slice-number
    order along the third axis), so predicting a converted case gives the masks of its slices.
    A patient whose slices differ in size, or that lacks a mask, stops the conversion with an error naming the file.
    Returns one row per patient (``patient, slices, tumour_slices, image, mask``), also written to ``converted.csv``
    (its paths relative to ``out``; the returned table's as paths under ``out``).

    The run goes through :func:`~gliomaseg.data.files.run_folder`: every case (image and mask) is written into a
    hidden folder and moved into ``out`` at the end, so a killed run leaves no temporary file or image without its
    mask in ``out``, and a rerun removes the previous run's cases.
    """
    patients, _ = open_source(inputs, strict=True)
    out = Path(out)
    with run_folder(out, "convert") as work:
        table = _convert(patients, work)
        write_csv(table, work / "converted.csv")
    for column in ("image", "mask"):
        table[column] = [str(out / v) for v in table[column]]
    return table


def _convert(patients, work: Path) -> pd.DataFrame:
    rows = []
    for patient in patients:
        if patient.geometry is not None:
            raise DataError(f"{patient.slices[0].image_path}: already a NIfTI case")
        images, masks = [], []
        for item in patient.slices:
            image, mask = item.image(lenient=False), item.mask()
            if mask is None:
                raise DataError(f"{item.image_path}: image has no mask (expected a file ending in _mask.tif)")
            if images and image.shape != images[0].shape:
                raise DataError(f"{item.image_path}: slice of shape {image.shape} differs from the patient's first slice {images[0].shape}; "
                                "a volume needs slices of one size")
            if mask.shape != image.shape[:2]:
                raise DataError(f"{item.mask_path}: mask shape {mask.shape} does not match its image {item.image_path} of shape {image.shape[:2]}")
            images.append(image)
            masks.append(mask)
        image_out, mask_out = write_slices_volume(images, masks, work / f"{patient.name}.nii.gz", work / f"{patient.name}_mask.nii.gz")
        rows.append({"patient": patient.name, "slices": len(images), "tumour_slices": sum(int(m.any()) for m in masks),
                     "image": image_out.relative_to(work).as_posix(), "mask": mask_out.relative_to(work).as_posix()})
    return pd.DataFrame(rows)
