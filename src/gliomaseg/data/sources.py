"""The one place where inputs become patients with ordered slices: a registry of readers keyed by file ending.

``open_source(paths)`` takes what a user points at (a kaggle_3m root, a patient folder, a
``prepare`` CSV, one slice file, a NIfTI case or three NIfTI channel files, a folder of NIfTI
cases, a DICOM series folder, a DICOM case folder with a ``sequences.txt``, a folder of those, series
named by role ``{"pre": DIR, "flair": DIR, "post": DIR}``) and returns :class:`PatientInput` objects, each holding its :class:`SliceInput` s in slice
order. ``prepare``, ``predict``, ``evaluate``, ``score`` and ``convert`` read their inputs through it.
A new format plugs in with :func:`register` (the design follows nnU-Net's ``imageio`` readers).

A slice's image is uint8 RGB (H, W, 3) and its mask uint8 0/1 (H, W), read on demand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from gliomaseg.core.errors import DataError
from gliomaseg.core.io import natural_key, safe_name
from gliomaseg.data import dicom
from gliomaseg.data.files import IMAGE_SUFFIXES, read_image, read_mask, read_slices_csv
from gliomaseg.data.nifti import NIFTI_ENDINGS, SEQUENCES, Geometry, case_name, read_mask_volume, read_volume

_NUMBER = re.compile(r"_(\d+)$")
Problems = list[tuple[str, str]]


@dataclass
class SliceInput:
    """One slice: its patient, identity (``name``, used for output files; ``slice`` number) and how to read it."""

    patient: str
    name: str
    image_path: Path
    mask_path: Path | None = None
    slice: int | None = None
    load_image: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    load_mask: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    grayscale: bool = False  # loaded image is one sequence copied into 3 channels: refused unless allow_grayscale

    def image(self, *, lenient: bool = True, allow_grayscale: bool = False, allow_16bit: bool = False) -> np.ndarray:
        """RGB (H, W, 3), uint8 (uint16 for an allowed 16-bit slice file: scale it with
        :func:`~gliomaseg.data.files.scale_volume`). Options as in :func:`~gliomaseg.data.files.read_image`."""
        if self.load_image:
            if self.grayscale and not allow_grayscale:
                raise DataError(f"{self.image_path}: one MR series of an unknown sequence; the model expects 3 channels "
                                "(pre-contrast, FLAIR, post-contrast). Name the series with --sequences pre=DIR flair=DIR "
                                "post=DIR (flair=DIR alone copies FLAIR into the others), or pass --allow-grayscale")
            return self.load_image()
        return read_image(self.image_path, lenient=lenient, allow_grayscale=allow_grayscale, allow_16bit=allow_16bit)

    def mask(self) -> np.ndarray | None:
        """uint8 0/1 (H, W), or ``None`` when the slice has no mask."""
        if self.load_mask:
            return self.load_mask()
        if self.mask_path is None or not self.mask_path.is_file():
            return None
        return read_mask(self.mask_path)


@dataclass
class PatientInput:
    """A patient (or NIfTI case) and its slices in slice order; ``geometry`` is set for volumes."""

    name: str
    slices: list[SliceInput]
    geometry: Geometry | None = None


Reader = Callable[[Sequence[Path], Problems], list[PatientInput]]
READERS: dict[str, Reader] = {}


def register(*endings: str) -> Callable[[Reader], Reader]:
    """Register a reader for files whose names end with any of ``endings`` (lower case, with the dot)."""

    def add(reader: Reader) -> Reader:
        for ending in endings:
            READERS[ending] = reader
        return reader

    return add


def ending(path: Path) -> str | None:
    """The longest registered ending of ``path`` (``.nii.gz`` before ``.gz``), or ``None``."""
    name = path.name.lower()
    matches = [e for e in READERS if name.endswith(e)]
    return max(matches, key=len) if matches else None


def slice_number(path: Path) -> int | None:
    """The trailing ``_<n>`` of a file's stem (``TCGA_CS_4941_19960909_12.tif`` -> 12)."""
    match = _NUMBER.search(path.stem)
    return int(match.group(1)) if match else None


def _mask_beside(image: Path) -> Path | None:
    for suffix in dict.fromkeys((image.suffix, ".tif", ".png")):
        candidate = image.with_name(f"{image.stem}_mask{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _is_mask(path: Path) -> bool:
    return path.stem.endswith("_mask") or (path.name.lower().endswith(NIFTI_ENDINGS) and case_name(path).endswith("_mask"))


def _slice_file(patient: str, path: Path) -> SliceInput:
    return SliceInput(patient, path.stem, path, _mask_beside(path), slice_number(path))


@register(*IMAGE_SUFFIXES)
def read_slice_files(paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
    """Single slice files: one patient per parent folder (keyed by the folder, not its name: see :func:`open_source`)."""
    patients: dict[Path, PatientInput] = {}
    for path in paths:
        patient = path.parent.name or "input"
        key = path.parent.resolve()
        patients.setdefault(key, PatientInput(patient, [])).slices.append(_slice_file(patient, path))
    return list(patients.values())


@register(".csv")
def read_csv(paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
    """A CSV of ``prepare`` (``patient, image_path`` and optional ``mask_path``, ``slice``)."""
    patients: dict[str, PatientInput] = {}
    for path in paths:
        frame = read_slices_csv(path, require_mask=False, check_paths=False)
        has_mask = "mask_path" in frame
        for row in frame.itertuples():
            safe_name(row.patient, "patient name", path)  # patient names become output folder and GIF names
            image = Path(row.image_path)
            mask = Path(row.mask_path) if has_mask and row.mask_path.strip() else None
            number = int(row.slice) if "slice" in frame and row.slice == row.slice else slice_number(image)
            patients.setdefault(row.patient, PatientInput(row.patient, [])).slices.append(
                SliceInput(row.patient, image.stem, image, mask, number))
    return list(patients.values())


@register(*NIFTI_ENDINGS)
def read_nifti(paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
    """One NIfTI case: a 4D (X, Y, Z, 3) file, or three 3D channel files; the mask is ``<case>_mask.nii.gz`` beside it."""
    images, geometry = read_volume(paths)
    name = case_name(paths[0])
    if len(paths) == 3 and name.endswith(f"_{SEQUENCES[0]}"):  # <case>_pre-contrast, _flair, _post-contrast (convert --layout sequences)
        name = name[: -len(SEQUENCES[0]) - 1]
    mask_file = next((f for f in (paths[0].with_name(f"{name}_mask{e}") for e in NIFTI_ENDINGS) if f.is_file()), None)
    truth = read_mask_volume(mask_file, geometry) if mask_file else None
    slices = [
        SliceInput(name, f"{name}_{k + 1}", paths[0], mask_file, k + 1, load_image=(lambda im=im: im),
                   load_mask=None if truth is None else (lambda m=truth[k]: m))
        for k, im in enumerate(images)
    ]
    return [PatientInput(name, slices, geometry)]


def _dicom_patient(case: dicom.DicomCase) -> PatientInput:
    """A DICOM case's slices (``slice`` k + 1 along the axial axis), its truth SEG as masks."""
    truth = case.truth
    slices = [
        SliceInput(case.name, f"{case.name}_{k + 1}", case.geometry.path, case.truth_path, k + 1, load_image=(lambda im=im: im),
                   load_mask=None if truth is None else (lambda m=truth[k]: m), grayscale=case.single_sequence)
        for k, im in enumerate(case.images)
    ]
    return PatientInput(case.name, slices, case.geometry)


@register(*dicom.DICOM_ENDINGS)
def read_dicom_files(paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
    """DICOM files given one by one: a SEG alone (truth: its series is looked for beside it), else the files of one MR series."""
    if len(paths) == 1 and dicom.is_segmentation(paths[0]):
        return [_dicom_patient(dicom.segmentation_file_case(paths[0]))]
    folder = paths[0].parent
    return [_dicom_patient(case) for case in dicom.read_folder(folder, list(paths))]


def read_sequences(roles: Mapping[str, str | Path], *, name: str | None = None, truth_files: Sequence[Path] = ()) -> list[PatientInput]:
    """Series named by role (``pre``, ``flair``, ``post``: a folder, or ``FOLDER@SERIES``) as one case.

    ``name`` names the case (default: the folder holding the series folders); ``truth_files`` are DICOM SEG
    files to look for its truth in (default: the DICOM files beside the series folders)."""
    return [_dicom_patient(dicom.read_sequences(dict(roles), name=name, extra_files=truth_files))]


def _read_folder(folder: Path, problems: Problems, *, top: bool) -> list[PatientInput]:
    """Slice files of a folder make one patient; each NIfTI case in it is a patient; its DICOM series (or the
    series its ``sequences.txt`` names) one case; without any of these, its subfolders."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=natural_key)
    slice_files, cases, unsupported, dicom_files = [], [], [], []
    mapping = folder / dicom.SEQUENCES_FILE if (folder / dicom.SEQUENCES_FILE).is_file() else None
    for file in files:
        kind = ending(file)
        if kind in dicom.DICOM_ENDINGS or (kind is None and file != mapping and dicom.is_dicom(file)):
            dicom_files.append(file)
        elif file == mapping or file.name.upper() == "DICOMDIR":
            continue
        elif kind in NIFTI_ENDINGS:
            if not _is_mask(file):
                cases.append(file)
        elif kind in IMAGE_SUFFIXES:
            if not _is_mask(file):
                slice_files.append(file)
            elif not any(file.with_name(f"{file.stem[:-5]}{s}").is_file() for s in (file.suffix, *IMAGE_SUFFIXES)):
                problems.append((str(file), "mask has no image: this is a mask, give the image it belongs to"))
        elif kind is None:
            unsupported.append(file)
    patients: list[PatientInput] = []
    for case in [c for c in cases if case_name(c).endswith(f"_{SEQUENCES[1]}")]:  # three sequence files make one case
        stem = case_name(case)[: -len(SEQUENCES[1]) - 1]
        group = [next((c for c in cases if case_name(c) == f"{stem}_{s}"), None) for s in SEQUENCES]
        if all(group):
            cases = [c for c in cases if c not in group]
            try:
                patients.extend(read_nifti(group, problems))  # type: ignore[arg-type]
            except DataError as exc:
                problems.append((str(case), str(exc).partition(": ")[2] or str(exc)))
    if slice_files:
        patients.append(PatientInput(folder.name, [_slice_file(folder.name, f) for f in slice_files]))
    if mapping is not None or dicom_files:
        try:
            patients.extend(_dicom_patient(case) for case in dicom.read_folder(folder, dicom_files, mapping))
        except DataError as exc:
            if top and not patients:
                raise
            text = str(exc)
            problems.append((str(folder), text[len(f"{folder}: "):] if text.startswith(f"{folder}: ") else text))
    for case in cases:
        try:
            patients.extend(read_nifti([case], problems))
        except DataError as exc:
            problems.append((str(case), str(exc).partition(": ")[2] or str(exc)))
    if patients or not top:
        problems.extend((str(f), f"unsupported format {f.suffix or '(none)'}; expected one of {', '.join(supported_endings())}")
                        for f in unsupported)
        return patients
    for sub in sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key):
        patients.extend(_read_folder(sub, problems, top=False))
    return patients


def supported_endings() -> list[str]:
    return sorted(READERS)


def open_source(paths: str | Path | Sequence[str | Path] | Mapping[str, str | Path], *, strict: bool = False
                ) -> tuple[list[PatientInput], Problems]:
    """Patients and their slices (in slice order) from what the user gave; a bad file in a batch goes to ``problems``.

    Args:
        paths: one path (a slice, a CSV, a NIfTI case, a patient folder, a kaggle_3m root, a folder of
            NIfTI cases, a DICOM series or case folder, a DICOM SEG) or several (three NIfTI channel files of
            one case, or several slice files), or DICOM series by role (``{"pre": DIR, "flair": DIR, "post": DIR}``).
        strict: raise on the first bad file instead of listing it in ``problems``.

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
        if path.is_file() and _is_mask(path):
            raise DataError(f"{path}: this is a mask; give the image it belongs to (a mask beside its image is read as the truth)")
    if len(paths) == 1 and paths[0].is_dir():
        patients = _read_folder(paths[0], problems, top=True)
    else:
        kinds = {ending(p) for p in paths}
        if None in kinds or any(p.is_dir() for p in paths):
            bad = next(p for p in paths if p.is_dir() or ending(p) is None)
            raise DataError(f"{bad}: unsupported input format {bad.suffix or '(none)'}; give a slice, a CSV, a NIfTI case "
                            f"({', '.join(supported_endings())}) or a folder")
        readers = {READERS[k] for k in kinds}
        if len(readers) > 1:
            raise DataError(f"{paths[0]}: several inputs must be of one kind (three NIfTI channels or slice files)")
        patients = readers.pop()(paths, problems)
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
    if not patients:
        if problems:  # e.g. a folder of masks alone
            raise DataError(f"{problems[0][0]}: {problems[0][1]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        raise DataError(f"{paths[0]}: no slices found (expected {', '.join(supported_endings())} files)")
    for patient in patients:
        patient.slices.sort(key=lambda s: (s.slice if s.slice is not None else -1, natural_key(s.image_path.name)))
    return patients, problems
