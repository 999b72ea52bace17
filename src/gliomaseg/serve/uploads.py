"""Uploaded files into cases, inside one per-request temporary folder.

Every name that arrives with an upload (the file name, the paths inside a zip) goes through
:func:`~gliomaseg.core.io.clean_name` (the name rule's viewer half: rename, never refuse) and :func:`inside`, so it
can only ever name a file under the request's folder. What a file is (a slice, a volume, a truth mask) is decided by
its format (:func:`gliomaseg.data.formats.registry.format_for`), as in ``gliomaseg predict``.
Sizes are checked before anything is decoded: the bytes of each file and of each zip member as they
are copied, and the height and width of each image from its header.
"""

from __future__ import annotations

import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from gliomaseg.core.errors import DataError
from gliomaseg.core.io import clean_name
from gliomaseg.core.limits import MAX_IMAGE_SIDE
from gliomaseg.data.dicom import ROLES, SEQUENCES_FILE, DicomGeometry
from gliomaseg.data.formats.base import UPLOAD_TRUTH_MARKERS, is_truth_stem, patient_of_stem
from gliomaseg.data.formats.dicom_series import DICOM
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.formats.registry import format_for, split_name
from gliomaseg.data.formats.slice_files import SLICES
from gliomaseg.data.nifti import Geometry, axial_shape, volume_bytes
from gliomaseg.data.sources import open_source, read_sequences
from gliomaseg.serve.limits import ServeLimits, UploadError, UploadTooLarge

ZIP_SUFFIXES = (".zip",)  # a container of uploads, not a format: its members are read by their formats
UPLOAD_FORMATS = {SLICES: "image", NIFTI: "nifti"}  # the formats uploaded as files (DICOM comes in a zip)
ACCEPTED_SUFFIXES = SLICES.endings + NIFTI.endings + ZIP_SUFFIXES
_CHUNK = 1 << 20


@dataclass
class Case:
    """One patient's slices, or one volume, ready for the model.

    Attributes:
        name: the patient (folder name, common file-name prefix, or the volume's file name).
        kind: ``"slices"`` or ``"volume"``.
        slice_names: one label per slice, in slice order (a file stem, or ``slice 7`` in a volume).
        images: uint8 RGB (H, W, 3) per slice.
        truths: uint8 0/1 (H, W) per slice, or None where no mask came with the slice.
        geometry: where a volume's slices came from (volumes only), used to write the predicted mask back.
    """

    name: str
    kind: str
    slice_names: list[str]
    images: list[np.ndarray]
    truths: list[np.ndarray | None]
    geometry: Geometry | None = None
    reported_missing: tuple[str, ...] = ()  # sequences the reader filled with FLAIR and said so (PatientInput's)


@dataclass
class Gathered:
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def inside(folder: Path, *parts: str) -> Path:
    """``folder / parts``, refusing anything that would resolve outside ``folder``."""
    root = folder.resolve()
    target = root.joinpath(*parts).resolve()
    if target == root or not target.is_relative_to(root):
        raise UploadError(f"{'/'.join(parts)}: refused, the name points outside the upload folder")
    return target


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    stem, suffix = split_name(path.name)
    for k in range(2, 100000):
        candidate = path.with_name(f"{stem}-{k}{suffix}")
        if not candidate.exists():
            return candidate
    raise UploadError(f"{path.name}: too many files of the same name")


def kind_of(name: str) -> str:
    """``image``, ``nifti``, ``zip`` or ``other``: the upload kind of the name's format (:data:`UPLOAD_FORMATS`)."""
    if name.lower().endswith(ZIP_SUFFIXES):
        return "zip"
    return UPLOAD_FORMATS.get(format_for(name), "other")  # type: ignore[arg-type]


class _Budget:
    """Bytes and files left for this request."""

    def __init__(self, limits: ServeLimits):
        self.limits = limits
        self.files = 0
        self.unpacked = 0

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise UploadTooLarge(f"{name}: more than {self.limits.max_files} files in one upload")

    def copy(self, source: BinaryIO, target: Path, name: str, limit: int, what: str) -> int:
        written = 0
        with open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise UploadTooLarge(f"{name}: {what} larger than the limit of {_megabytes(limit)}")
                out.write(chunk)
        return written


class _Memory:
    """Decoded bytes left for this request (:attr:`ServeLimits.max_decoded_bytes`), taken from headers before decoding."""

    def __init__(self, limits: ServeLimits):
        self.limit = limits.max_decoded_bytes
        self.used = 0

    def take(self, path: Path, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.limit:
            raise UploadTooLarge(f"{path}: {what} decodes to {_megabytes(nbytes)}; with the rest of the upload that is more "
                                 f"than the memory limit of {_megabytes(self.limit)}")
        self.used += nbytes


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


def save_uploads(files: Iterable[tuple[str, BinaryIO]], folder: Path, limits: ServeLimits) -> list[tuple[str, Path]]:
    """Copy uploaded ``(name, file)`` pairs into ``folder/incoming``; returns ``(original name, saved path)``."""
    incoming = folder / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    budget = _Budget(limits)
    saved = []
    for name, handle in files:
        budget.add_file(name)
        target = _unique(inside(incoming, clean_name(name)))
        budget.copy(handle, target, name, limits.max_upload_bytes, "file")
        saved.append((name, target))
    if not saved:
        raise UploadError("no file in the upload: choose slices (.tif, .png, .jpg), a .zip of a patient folder or a NIfTI volume")
    return saved


def extract_zip(path: Path, name: str, dest: Path, limits: ServeLimits) -> Path:
    """Unpack a zip into ``dest``, each folder that holds files becoming one folder of ``dest`` (one patient).

    Member names are made safe one component at a time, so ``../x`` or ``/etc/x`` land inside ``dest``.
    Folders whose safe names would clash (``Patient_é/`` and ``Patient_ü/``, ``siteA/P1`` and ``siteB/P1``, a
    folder ``P/`` beside a file ``P``) are kept apart: the second is named after its whole path, or numbered.
    The number of members and the unpacked bytes are limited; members are counted as they are copied,
    not trusted from the zip's own directory.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{name}: not a readable zip file ({exc})") from None
    budget = _Budget(limits)
    dest.mkdir(parents=True, exist_ok=True)
    folders: dict[tuple[str, ...], Path] = {}  # a member's folder in the zip -> its folder here
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.max_files:
            raise UploadTooLarge(f"{name}: {len(members)} files in the zip, more than the limit of {limits.max_files}")
        declared = sum(m.file_size for m in members)
        if declared > limits.max_unpacked_bytes:
            raise UploadTooLarge(f"{name}: unpacks to {_megabytes(declared)}, more than the limit of {_megabytes(limits.max_unpacked_bytes)}")
        for member in members:
            parts = [p for p in re.split(r"[\\/]+", member.filename) if p not in ("", ".", "..")]
            if not parts or any(p.startswith((".", "__MACOSX")) for p in parts):
                continue
            parent = tuple(parts[:-1])
            if parent not in folders:
                folders[parent] = _zip_folder(dest, parent, set(folders.values()))
            target = _unique(inside(folders[parent], clean_name(parts[-1])))
            target.parent.mkdir(parents=True, exist_ok=True)
            budget.add_file(f"{name}: {member.filename}")
            try:
                with archive.open(member) as source:
                    budget.unpacked += budget.copy(source, target, f"{name}: {member.filename}",
                                                   limits.max_unpacked_bytes - budget.unpacked, "unpacked content")
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                raise UploadError(f"{name}: member {member.filename} does not unpack ({exc})") from None
    return dest


def _zip_folder(dest: Path, parent: tuple[str, ...], used: set[Path]) -> Path:
    """The folder of ``dest`` for a zip folder ``parent``: its last name made safe, else its whole path, else numbered."""
    if not parent:
        return dest
    for candidate in (clean_name(parent[-1]), clean_name("_".join(parent))):
        folder = inside(dest, candidate)
        if folder not in used and not folder.exists():
            return folder
    return _unique(inside(dest, clean_name("_".join(parent))))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UploadTooLarge(f"{path}: the image claims more pixels than the limit of {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}") from None
    except Exception as exc:  # PIL raises many types for files it cannot identify
        raise DataError(f"{path}: file does not decode as an image ({type(exc).__name__})") from None
    return height, width


def _check_side(path: Path, shape: tuple[int, ...], limits: ServeLimits) -> None:
    if max(shape[:2]) > limits.max_image_side:
        raise UploadTooLarge(f"{path}: {shape[0]}x{shape[1]} pixels, larger than the limit of "
                             f"{limits.max_image_side} pixels a side")


def _patient_of(stems: list[str]) -> str:
    names = {patient_of_stem(s) for s in stems}
    return names.pop() if len(names) == 1 else "upload"


def _slice_cases(folder: Path, limits: ServeLimits, out: Gathered, slices_left: int, memory: _Memory) -> int:
    patients, skipped = open_source(folder, rename_duplicates=True)
    items = [item for patient in patients if patient.geometry is None for item in patient.slices]
    out.notes.extend(f"skipped {path}: {problem}" for path, problem in skipped)
    if len(items) > slices_left:
        raise UploadTooLarge(f"{folder.name}: more than {limits.max_slices} slices in one upload")
    by_patient: dict[str, list] = {}
    for item in items:
        by_patient.setdefault(item.patient, []).append(item)
    count = 0
    for patient, patient_items in by_patient.items():
        case = Case(patient, "slices", [], [], [])
        for item in patient_items:
            try:
                shape = image_size(item.image_path)
                _check_side(item.image_path, shape, limits)
                memory.take(item.image_path, shape[0] * shape[1] * 3, "the slice")
                truth = None
                if item.mask_path is not None:  # the mask is held to the same limits as its image, before either decodes
                    mask_shape = image_size(item.mask_path)
                    _check_side(item.mask_path, mask_shape, limits)
                    if mask_shape != shape:
                        raise DataError(f"{item.mask_path}: mask of {mask_shape[0]}x{mask_shape[1]} pixels does not match its "
                                        f"image of {shape[0]}x{shape[1]}")
                    memory.take(item.mask_path, shape[0] * shape[1], "the mask")
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    image = SLICES.read_image(item.image_path, lenient=True, max_side=limits.max_image_side)
                out.notes.extend(str(w.message) for w in caught)
                if item.mask_path is not None:
                    truth = SLICES.read_mask(item.mask_path, max_side=limits.max_image_side)
                    if truth.shape != image.shape[:2]:
                        raise DataError(f"{item.mask_path}: mask shape {truth.shape} does not match its image of shape {image.shape[:2]}")
            except UploadTooLarge:
                raise
            except DataError as exc:
                out.notes.append(f"skipped {exc}")
                continue
            case.slice_names.append(item.name)  # unique in its patient: a second P_1 is P_1-2
            case.images.append(image)
            case.truths.append(truth)
        if case.images:
            out.cases.append(case)
            count += len(case.images)
    return count


def _volume_case(path: Path, truth_path: Path | None, limits: ServeLimits, out: Gathered, slices_left: int, memory: _Memory) -> int:
    """One NIfTI volume read as ``gliomaseg predict`` reads it (:func:`gliomaseg.data.sources.open_source`).

    Its size (and its truth's) is checked from the header before any voxel is read.
    """
    rows, cols, count = axial_shape(path)
    memory.take(path, volume_bytes(path), "the volume")
    if truth_path is not None:
        memory.take(truth_path, volume_bytes(truth_path), "the truth volume")
    if max(rows, cols) > limits.max_image_side:
        raise UploadTooLarge(f"{path}: slices of {rows}x{cols} voxels, larger than the limit of {limits.max_image_side} a side")
    if count > min(limits.max_slices, slices_left):
        raise UploadTooLarge(f"{path}: {count} slices, more than the limit of {min(limits.max_slices, slices_left)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (patient,), _ = open_source(path, strict=True)
    out.notes.extend(str(w.message) for w in caught)
    images = [item.image() for item in patient.slices]
    truths: list[np.ndarray | None] = [None] * len(images)
    if truth_path is not None and patient.slices[0].mask_path == truth_path:
        truths = [item.mask() for item in patient.slices]
    elif truth_path is not None and patient.geometry is not None:
        truths = list(NIFTI.read_mask(truth_path, patient.geometry))
    out.cases.append(Case(patient.name, "volume", [f"slice {k + 1}" for k in range(len(images))], images, truths, patient.geometry))
    return len(images)


def _dicom_cases(folder: Path, name: str, limits: ServeLimits, out: Gathered, slices_left: int) -> int:
    """The DICOM case(s) of an extracted zip, read by the registry as ``gliomaseg predict`` reads them.

    Folders named ``pre``, ``flair`` and ``post`` (the layout of ``convert --to dicom``; FLAIR alone will do) are one
    case named after the zip, and a DICOM SEG elsewhere in the zip is its truth; otherwise each series folder is
    read as ``predict --input`` reads it (one series of an unknown sequence is refused, as a grayscale slice is).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        roles = {p.name.lower(): p for p in folder.iterdir() if p.is_dir() and p.name.lower() in ROLES}
        if roles:
            truth = [p for p in folder.rglob("*") if p.is_file() and p.parent not in roles.values() and DICOM.is_file(p)]
            patients, skipped = read_sequences(roles, name=clean_name(split_name(name)[0]), truth_files=truth), []
        else:
            patients, skipped = open_source(folder, rename_duplicates=True)
    out.notes.extend(str(w.message) for w in caught)
    out.notes.extend(f"skipped {path}: {problem}" for path, problem in skipped)
    count = 0
    for patient in (p for p in patients if isinstance(p.geometry, DicomGeometry)):
        if len(patient.slices) > slices_left - count:
            raise UploadTooLarge(f"{patient.name}: {len(patient.slices)} slices, more than the limit of {limits.max_slices} in one upload")
        images = [item.image() for item in patient.slices]
        _check_side(patient.geometry.path, images[0].shape, limits)
        out.cases.append(Case(patient.name, "volume", [f"slice {k + 1}" for k in range(len(images))], images,
                              [item.mask() for item in patient.slices], patient.geometry,
                              reported_missing=patient.reported_missing))
        count += len(images)
    return count


def gather(saved: list[tuple[str, Path]], folder: Path, limits: ServeLimits) -> Gathered:
    """Saved uploads into cases: loose slices form one patient, each zip its patient folders, each NIfTI one volume.

    A slice beside a ``<stem>_mask`` file gets that file as truth (as in ``gliomaseg predict``); a NIfTI named
    ``<volume>_mask.nii.gz`` or ``<volume>_seg.nii.gz`` is the truth of ``<volume>.nii.gz``.
    """
    out = Gathered()
    loose: list[Path] = []
    volumes: list[Path] = []
    slice_folders: list[Path] = []
    dicom_roots: list[tuple[str, Path]] = []
    for name, path in saved:
        kind = kind_of(path.name)
        if kind == "image":
            loose.append(path)
        elif kind == "nifti":
            volumes.append(path)
        elif kind == "zip":
            dest = extract_zip(path, name, _unique(folder / f"zip-{split_name(path.name)[0]}"), limits)
            path.unlink()
            for member in sorted(dest.rglob("*")):
                if member.is_file() and kind_of(member.name) == "nifti":
                    volumes.append(member.rename(_unique(folder / "incoming" / member.name)))
            # A zip holds slices at its top, in patient folders below it, or both: each folder is one patient.
            slice_folders.extend(f for f in [dest, *sorted(p for p in dest.iterdir() if p.is_dir())]
                                 if any(kind_of(m.name) == "image" for m in f.iterdir()))
            if any(m.is_file() and (m.name == SEQUENCES_FILE or DICOM.is_file(m)) for m in dest.rglob("*")):
                dicom_roots.append((name, dest))
        else:
            if len(saved) == 1:
                raise UploadError(f"{name}: unsupported file type; upload slices ({', '.join(SLICES.endings)}), "
                                  f"a .zip of a patient folder or a NIfTI volume (.nii, .nii.gz)")
            out.notes.append(f"skipped {name}: unsupported file type")
    if loose and not slice_folders and not volumes and all(is_truth_stem(p.stem, UPLOAD_TRUTH_MARKERS) for p in loose):
        raise UploadError(f"{loose[0].name}: this is a mask; give the image it belongs to (upload the slice and its _mask file together)")
    if loose:
        patient = clean_name(_patient_of([p.stem for p in loose]))
        target = folder / "slices" / patient
        target.mkdir(parents=True)
        for path in loose:
            shutil.move(path, target / path.name)
        slice_folders.insert(0, target)
    left = limits.max_slices
    memory = _Memory(limits)
    for slices in slice_folders:
        try:
            left -= _slice_cases(slices, limits, out, left, memory)
        except UploadTooLarge:
            raise
        except DataError as exc:
            out.notes.append(str(exc))
    for root_name, root in dicom_roots:
        try:
            left -= _dicom_cases(root, root_name, limits, out, left)
        except UploadTooLarge:
            raise
        except DataError as exc:
            out.notes.append(str(exc))
    stems = {split_name(p.name)[0]: p for p in volumes}
    for stem, path in stems.items():
        if any(stem.endswith(marker) and stem[: -len(marker)] in stems for marker in UPLOAD_TRUTH_MARKERS):
            continue  # the truth of another volume
        truth = next((stems[stem + marker] for marker in UPLOAD_TRUTH_MARKERS if stem + marker in stems), None)
        try:
            left -= _volume_case(path, truth, limits, out, left, memory)
        except UploadTooLarge:
            raise
        except DataError as exc:
            out.notes.append(str(exc))
    if not out.cases:
        problems = "; ".join(out.notes) or "nothing to segment"
        raise UploadError(f"no slice could be read: {problems}")
    return out
