"""The CSVs of ``gliomaseg prepare``: ``patient, image_path`` and optional ``mask_path``, ``slice`` (slice files)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from gliomaseg.core.io import check_name
from gliomaseg.data.files import read_slices_csv
from gliomaseg.data.formats.base import PatientInput, Problems, SliceFormat, SliceInput, slice_number


class PreparedCsv(SliceFormat):
    """A table of slice files; its images and masks are read by :class:`~.slice_files.SliceFiles`."""

    name = "csv"
    endings = (".csv",)

    def open(self, paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
        """A CSV of ``prepare`` (``patient, image_path`` and optional ``mask_path``, ``slice``)."""
        patients: dict[str, PatientInput] = {}
        for path in paths:
            frame = read_slices_csv(path, require_mask=False, check_paths=False)
            has_mask = "mask_path" in frame
            for row in frame.itertuples():
                check_name(row.patient, "patient name", path)  # patient names become output folder and GIF names
                image = Path(row.image_path)
                mask = Path(row.mask_path) if has_mask and row.mask_path.strip() else None
                number = int(row.slice) if "slice" in frame and row.slice == row.slice else slice_number(image)
                patients.setdefault(row.patient, PatientInput(row.patient, [])).slices.append(
                    SliceInput(row.patient, image.stem, image, mask, number))
        return list(patients.values())


CSV = PreparedCsv()
