"""The one place where inputs become patients with ordered slices, each file read by its format (picked by its ending).

``open_source(paths)`` takes what a user points at (a kaggle_3m root, a patient folder, a
``prepare`` CSV, one slice file, a NIfTI case or three NIfTI channel files, a folder of NIfTI
cases, a DICOM series folder, a DICOM case folder with a ``sequences.txt``, a folder of those, series
named by role ``{"pre": DIR, "flair": DIR, "post": DIR}``) and returns :class:`PatientInput` objects, each holding its :class:`SliceInput` s in slice
order. ``prepare``, ``predict``, ``evaluate``, ``score`` and ``convert`` read their inputs through it.
Each file is read by its format (:mod:`gliomaseg.data.formats`: one class per format, which also owns its
names); a new format plugs in with :func:`~gliomaseg.data.formats.registry.register` (the design follows
nnU-Net's ``imageio`` reader-writers). This module walks folders and gives the patients.

A slice's image is uint8 RGB (H, W, 3) and its mask uint8 0/1 (H, W), read on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from gliomaseg.core.errors import DataError
from gliomaseg.core.io import natural_key
from gliomaseg.data import dicom
from gliomaseg.data.formats.base import PatientInput, Problems, SliceInput, slice_number
from gliomaseg.data.formats.dicom_series import DICOM
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.formats.registry import ending, format_for, is_mask, register, supported_endings
from gliomaseg.data.formats.slice_files import SLICES

__all__ = ["PatientInput", "Problems", "SliceInput", "ending", "format_for", "is_mask", "open_source", "read_sequences",
           "register", "slice_number", "supported_endings"]


def read_sequences(roles: Mapping[str, str | Path], *, name: str | None = None, truth_files: Sequence[Path] = ()) -> list[PatientInput]:
    """Series named by role (``pre``, ``flair``, ``post``: a folder, or ``FOLDER@SERIES``) as one case.

    ``name`` names the case (default: the folder holding the series folders); ``truth_files`` are DICOM SEG
    files to look for its truth in (default: the DICOM files beside the series folders)."""
    return DICOM.open_sequences(roles, name=name, truth_files=truth_files)


def _read_folder(folder: Path, problems: Problems, *, top: bool) -> list[PatientInput]:
    """Slice files of a folder make one patient; each NIfTI case in it is a patient; its DICOM series (or the
    series its ``sequences.txt`` names) one case; without any of these, its subfolders."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=natural_key)
    slice_files, cases, unsupported, dicom_files = [], [], [], []
    mapping = folder / dicom.SEQUENCES_FILE if (folder / dicom.SEQUENCES_FILE).is_file() else None
    for file in files:
        fmt = format_for(file)
        if fmt is DICOM or (fmt is None and file != mapping and DICOM.is_file(file)):
            dicom_files.append(file)
        elif file == mapping or file.name.upper() == "DICOMDIR":
            continue
        elif fmt is NIFTI:
            if not NIFTI.is_mask(file):
                cases.append(file)
        elif fmt is SLICES:
            if not SLICES.is_mask(file):
                slice_files.append(file)
            elif SLICES.image_of_mask(file) is None:
                problems.append((str(file), "mask has no image: this is a mask, give the image it belongs to"))
        elif fmt is None:
            unsupported.append(file)
    patients: list[PatientInput] = []
    for case, group in NIFTI.sequence_groups(cases):  # three sequence files make one case
        cases = [c for c in cases if c not in group]
        try:
            patients.extend(NIFTI.open(group, problems))
        except DataError as exc:
            problems.append((str(case), str(exc).partition(": ")[2] or str(exc)))
    if slice_files:
        patients.append(PatientInput(folder.name, [SLICES.slice_input(folder.name, f) for f in slice_files]))
    if mapping is not None or dicom_files:
        try:
            patients.extend(DICOM.open_folder(folder, dicom_files, mapping))
        except DataError as exc:
            if top and not patients:
                raise
            text = str(exc)
            problems.append((str(folder), text[len(f"{folder}: "):] if text.startswith(f"{folder}: ") else text))
    for case in cases:
        try:
            patients.extend(NIFTI.open([case], problems))
        except DataError as exc:
            problems.append((str(case), str(exc).partition(": ")[2] or str(exc)))
    if patients or not top:
        problems.extend((str(f), f"unsupported format {f.suffix or '(none)'}; expected one of {', '.join(supported_endings())}")
                        for f in unsupported)
        return patients
    for sub in sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key):
        patients.extend(_read_folder(sub, problems, top=False))
    return patients


def open_source(paths: str | Path | Sequence[str | Path] | Mapping[str, str | Path], *, strict: bool = False,
                rename_duplicates: bool = False) -> tuple[list[PatientInput], Problems]:
    """Patients and their slices (in slice order) from what the user gave; a bad file in a batch goes to ``problems``.

    Args:
        paths: one path (a slice, a CSV, a NIfTI case, a patient folder, a kaggle_3m root, a folder of
            NIfTI cases, a DICOM series or case folder, a DICOM SEG) or several (three NIfTI channel files of
            one case, or several slice files), or DICOM series by role (``{"pre": DIR, "flair": DIR, "post": DIR}``).
        strict: raise on the first bad file instead of listing it in ``problems``.
        rename_duplicates: two slices of one name in a patient (``P_1.tif`` and ``P_1.png``) would write the same
            output files: refused (one line naming both), or with this the second is named ``P_1-2`` (the viewer).

    Returns:
        ``(patients, problems)``; ``problems`` lists ``(path, problem)`` for files left out.

    Raises:
        DataError: naming the path, when it does not exist, has an unsupported format or holds no slices.
    """
    if isinstance(paths, Mapping):
        return read_sequences(paths), []
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise DataError("no input given")
    problems: Problems = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: input does not exist")
        if path.is_file() and is_mask(path):
            raise DataError(f"{path}: this is a mask; give the image it belongs to (a mask beside its image is read as the truth)")
    if len(paths) == 1 and paths[0].is_dir():
        patients = _read_folder(paths[0], problems, top=True)
    else:
        formats = {format_for(p) for p in paths}
        folder = next((p for p in paths if p.is_dir()), None)
        if folder is not None:
            raise DataError(f"{folder}: a folder goes alone; give one folder (or the folder above several patients' "
                            "folders) per run, or several slice files")
        if None in formats:
            bad = next(p for p in paths if format_for(p) is None)
            raise DataError(f"{bad}: unsupported input format {bad.suffix or '(none)'}; give a slice, a CSV, a NIfTI case "
                            f"({', '.join(supported_endings())}) or a folder")
        if len(formats) > 1:
            raise DataError(f"{paths[0]}: several inputs must be of one kind (three NIfTI channels or slice files)")
        patients = formats.pop().open(paths, problems)  # type: ignore[union-attr]
    if strict and problems:
        raise DataError(f"{problems[0][0]}: {problems[0][1]}")
    patients = [p for p in patients if p.slices]
    seen: dict[str, PatientInput] = {}
    for patient in patients:  # a patient's name becomes its output folder: two of one name would overwrite each other
        other = seen.setdefault(patient.name, patient)
        if other is not patient:
            raise DataError(f"{patient.slices[0].image_path}: patient {patient.name!r} also comes from "
                            f"{other.slices[0].image_path}; two patients of one name would write into one output folder, "
                            "so give them separately (or rename one folder)")
        names: dict[str, SliceInput] = {}
        for item in patient.slices:  # a slice's name becomes its output files (P_1.tif and P_1.png: both P_1_pred.png)
            first = names.setdefault(item.name, item)
            if first is item:
                continue
            if rename_duplicates:  # the viewer's way: an upload cannot be asked to rename a file
                item.name = next(f"{item.name}-{k}" for k in range(2, len(patient.slices) + 2)
                                 if f"{item.name}-{k}" not in names)
                names[item.name] = item
            elif first.image_path == item.image_path:
                raise DataError(f"{item.image_path}: listed twice for patient {patient.name!r}; each slice once, please")
            else:
                raise DataError(f"{item.image_path}: slice {item.name!r} of patient {patient.name!r} also comes from "
                                f"{first.image_path}; two slices of one name would write the same output files, so keep "
                                "one of them (or rename it)")
    if not patients:
        if problems:  # e.g. a folder of masks alone
            raise DataError(f"{problems[0][0]}: {problems[0][1]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        raise DataError(f"{paths[0]}: no slices found (expected {', '.join(supported_endings())} files)")
    for patient in patients:
        patient.slices.sort(key=lambda s: (s.slice if s.slice is not None else -1, natural_key(s.image_path.name)))
    return patients, problems
