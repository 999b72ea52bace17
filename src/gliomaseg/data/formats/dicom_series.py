"""DICOM cases (:mod:`gliomaseg.data.dicom`): MR series in (a series folder, a case folder with ``sequences.txt``, series
by role), the truth and the prediction as a DICOM Segmentation ``<case>_seg.dcm``."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from gliomaseg.data import dicom
from gliomaseg.data.formats.base import SEG, PatientInput, Problems, SliceFormat, SliceInput
from gliomaseg.data.sequences import SEQUENCES


class DicomSeries(SliceFormat):
    """DICOM files; a case's slices are its axial slices, its truth the SEG that references its series."""

    name = "dicom"
    endings = dicom.DICOM_ENDINGS
    prediction_ending = ".dcm"

    def prediction_name(self, name: str) -> str:
        """``<case>_seg.dcm``, the DICOM Segmentation of a case."""
        return f"{name}{SEG}{self.prediction_ending}"

    def mask_name(self, image_name: str, ending: str | None = None) -> str:
        """``<case>_seg.dcm`` too: ``convert`` writes a case's truth as its Segmentation."""
        return self.prediction_name(image_name)

    def patient(self, case: dicom.DicomCase) -> PatientInput:
        """A DICOM case's slices (``slice`` k + 1 along the axial axis), its truth SEG as masks."""
        truth = case.truth
        slices = [
            SliceInput(case.name, f"{case.name}_{k + 1}", case.geometry.path, case.truth_path, k + 1, load_image=(lambda im=im: im),
                       load_mask=None if truth is None else (lambda m=truth[k]: m), grayscale=case.single_sequence)
            for k, im in enumerate(case.images)
        ]
        reported = tuple(SEQUENCES[dicom.ROLES.index(role)] for role in case.filled)  # the roles in channel order
        return PatientInput(case.name, slices, case.geometry, reported_missing=reported)

    def open(self, paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
        """DICOM files given one by one: a SEG alone (truth: its series is looked for beside it), else the files of one MR series."""
        if len(paths) == 1 and dicom.is_segmentation(paths[0]):
            return [self.patient(dicom.segmentation_file_case(paths[0]))]
        folder = paths[0].parent
        return [self.patient(case) for case in dicom.read_folder(folder, list(paths))]

    def open_folder(self, folder: Path, files: Sequence[Path], mapping: Path | None) -> list[PatientInput]:
        """The case(s) of a folder: its series named by ``mapping`` (``sequences.txt``), else its one series."""
        return [self.patient(case) for case in dicom.read_folder(folder, files, mapping)]

    def open_sequences(self, roles: Mapping[str, str | Path], *, name: str | None = None,
                       truth_files: Sequence[Path] = ()) -> list[PatientInput]:
        """Series named by role (``pre``, ``flair``, ``post``) as one case (:func:`gliomaseg.data.dicom.read_sequences`)."""
        return [self.patient(dicom.read_sequences(dict(roles), name=name, extra_files=truth_files))]

    def is_file(self, path: Path) -> bool:
        """A DICOM file by its ending or its preamble (:func:`gliomaseg.data.dicom.is_dicom`)."""
        return dicom.is_dicom(path)

    def write_mask(self, mask: Sequence[np.ndarray], out: Path, geometry: dicom.DicomGeometry | None = None, **options) -> Path:
        """A binary DICOM Segmentation referencing ``geometry``'s series (options: ``model``, ... of
        :func:`~gliomaseg.data.dicom.write_segmentation`)."""
        return dicom.write_segmentation(mask, geometry, out, **options)  # type: ignore[arg-type]


DICOM = DicomSeries()
