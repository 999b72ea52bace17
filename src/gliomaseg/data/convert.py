"""``gliomaseg convert``: kaggle_3m patients (or any slice source with masks) to NIfTI, for 3D Slicer, ITK-SNAP and friends."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from gliomaseg.data.files import write_csv
from gliomaseg.data.nifti import write_slices_volume
from gliomaseg.data.sources import open_source
from gliomaseg.errors import DataError
from gliomaseg.units import check_spacing, spacing_text


def convert_to_nifti(inputs: str | Path, out: str | Path, *, spacing: Sequence[float] | None = None,
                     layout: str = "channels") -> pd.DataFrame:
    """Write each patient as ``<patient>.nii.gz`` (uint8, (X, Y, Z, 3)) and ``<patient>_mask.nii.gz`` (uint8 0/1, (X, Y, Z)).

    The layout is the one :mod:`gliomaseg.data.nifti` reads back (LPS, slices in slice-number order along
    the third axis), so predicting a converted case gives the masks of its slices. ``layout="sequences"``
    writes ``<patient>_pre-contrast``, ``_flair`` and ``_post-contrast.nii.gz`` (3D) instead of the 4D file.
    ``spacing`` (x, y, z in mm) is recorded in the headers; without it the units are "unknown", as kaggle_3m
    records none (a volume then has no mL).
    A patient whose slices differ in size, or that lacks a mask, stops the conversion with an error naming the file.
    Returns one row per patient (``patient, slices, tumour_slices, image, mask``), also written to ``converted.csv``.
    """
    try:
        spacing = check_spacing(spacing)
    except ValueError as exc:
        raise DataError(f"--spacing: {exc}") from exc
    patients, _ = open_source(inputs, strict=True)
    rows = []
    out = Path(out)
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
        image_out, mask_out = write_slices_volume(images, masks, out / f"{patient.name}.nii.gz", out / f"{patient.name}_mask.nii.gz",
                                                  spacing=spacing, layout=layout)
        rows.append({"patient": patient.name, "slices": len(images), "tumour_slices": sum(int(m.any()) for m in masks),
                     "image": ";".join(str(p) for p in image_out), "mask": str(mask_out), "spacing": spacing_text(spacing)})
    table = pd.DataFrame(rows)
    write_csv(table, out / "converted.csv")
    return table
