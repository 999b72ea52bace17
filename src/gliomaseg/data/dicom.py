"""DICOM in and out (pydicom, highdicom): MR series as scanners write them -> axial slices; masks -> DICOM Segmentation.

Reading. The files of a folder are grouped by SeriesInstanceUID; a series' slices are ordered by
ImagePositionPatient projected on the slice normal (row x column direction cosines), never by file
name or InstanceNumber. Spacing comes from PixelSpacing (rows, columns) and the distance between
consecutive positions. A series is refused, with one error naming its folder, for: objects that are
not MR images (another modality, no pixel data), mixed orientations, slices of different sizes or
spacings, uneven gaps (a missing slice), two slices at one position, more than one frame of
reference, multi-frame (enhanced) objects, and a compressed transfer syntax with no decoder
installed (the error names the packages that decode it).

Channels. The model's three channels are three series of one geometry (same frame of reference,
orientation, size and slice positions: nothing is resampled), named by role, ``pre``, ``flair`` and
``post``: ``--sequences pre=DIR flair=DIR post=DIR`` or a mapping file (``sequences.txt`` in a case
folder, one ``role=DIR`` a line, DIR relative to the file; ``DIR@SERIES`` picks one series of a folder by
SeriesNumber, SeriesDescription or SeriesInstanceUID). FLAIR alone (or a missing pre / post) is the
missing-sequence path: FLAIR takes the missing channel's place, as kaggle_3m stores a missing sequence,
with a warning. One series with no mapping is one unknown sequence: it is refused like a grayscale slice
unless ``--allow-grayscale``.

Values. A series whose BitsStored is 8 or less (and no rescale) is taken as it is (``convert --to dicom``
writes these, so a converted patient predicts exactly as its slices). Deeper values (the usual 12/16-bit
MR) get RescaleSlope/Intercept, then are scaled per series with :func:`~gliomaseg.data.files.scale_volume`
(the 0.5th..99.5th percentile -> 0..255 of ``--allow-16bit``), with a warning.

Geometry. The slices follow :mod:`gliomaseg.data.nifti`'s convention (voxel axes permuted / flipped
to the order closest to LPS, never resampled; third axis axial, radiological display), so a DICOM case
and its NIfTI twin give the same slices. :class:`DicomGeometry` is a :class:`~gliomaseg.data.nifti.Geometry`
with the real affine, so the NIfTI mask and the volume in mL use the real spacing, plus the source
datasets, so :func:`write_segmentation` can reference them.

pydicom and highdicom are imported only when DICOM is met; without them one error names
``pip install 'gliomaseg[dicom]'``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from gliomaseg.core.errors import DataError, InputWarning
from gliomaseg.core.io import atomic_write, check_name
from gliomaseg.core.limits import MAX_DECODED_BYTES, MAX_IMAGE_SIDE
from gliomaseg.data.files import scale_volume
from gliomaseg.data.formats.base import SEG
from gliomaseg.data.nifti import LPS, Geometry

DICOM_ENDINGS = (".dcm", ".dicom")
SEQUENCES_FILE = "sequences.txt"
ROLES = ("pre", "flair", "post")
EXTRA = "pip install 'gliomaseg[dicom]'"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SEGMENT_LABEL = "glioma FLAIR abnormality"
# Orientation cosines and positions: equal within these (mm for positions).
ORIENTATION_TOL = 1e-4
POSITION_TOL = 0.01
GAP_RTOL = 0.01


def _pydicom(what: str | Path):
    try:
        import pydicom
    except ImportError:
        raise DataError(f"{what}: reading DICOM needs pydicom and highdicom: {EXTRA}") from None
    return pydicom


def _highdicom(what: str | Path):
    _pydicom(what)
    try:
        import highdicom
    except ImportError:
        raise DataError(f"{what}: DICOM Segmentation needs highdicom: {EXTRA}") from None
    return highdicom


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` / ``.dicom`` file, or any file with the DICOM preamble (``DICM`` at byte 128); DICOMDIR is not an image."""
    if path.name.upper() == "DICOMDIR":
        return False
    if path.name.lower().endswith(DICOM_ENDINGS):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


@dataclass
class Series:
    """One MR series: its datasets ordered along the slice normal, and its geometry (mm, patient LPS coordinates)."""

    folder: Path
    uid: str
    datasets: list = field(repr=False)
    orientation: np.ndarray  # (6,) row then column direction cosines
    positions: np.ndarray  # (N, 3) ImagePositionPatient in slice order
    spacing: tuple[float, float, float]  # between rows, between columns, between slices
    frame_of_reference: str
    number: str = ""
    description: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.datasets[0].Rows), int(self.datasets[0].Columns)

    @property
    def label(self) -> str:
        return f"series {self.number or '?'} {self.description!r} ({self.uid})"

    def affine(self) -> np.ndarray:
        """RAS affine (NIfTI's) of the native voxel array (column, row, slice)."""
        row_dir, col_dir = self.orientation[:3], self.orientation[3:]
        normal = np.cross(row_dir, col_dir)
        lps = np.eye(4)
        lps[:3, 0] = row_dir * self.spacing[1]
        lps[:3, 1] = col_dir * self.spacing[0]
        lps[:3, 2] = normal * self.spacing[2]
        lps[:3, 3] = self.positions[0]
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    def pixels(self) -> np.ndarray:
        """(N, rows, cols): uint8 when BitsStored <= 8 and no rescale, else float32 after RescaleSlope/Intercept."""
        _pydicom(self.folder)
        from pydicom.pixels import apply_rescale

        first = self.datasets[0]
        rescaled = any(float(getattr(ds, "RescaleSlope", 1) or 1) != 1 or float(getattr(ds, "RescaleIntercept", 0) or 0) != 0
                       for ds in self.datasets)
        shallow = int(getattr(first, "BitsStored", 16)) <= 8 and not rescaled
        slices = []
        for ds in self.datasets:
            try:
                array = ds.pixel_array
            except Exception as exc:  # pydicom raises many types for broken pixel data
                name = Path(getattr(ds, "filename", "") or "?").name
                raise DataError(f"{self.folder}: {name}: pixel data does not decode ({type(exc).__name__}: {str(exc)[:160]})") from None
            if shallow:
                array = array.astype(np.uint8)
                slices.append(255 - array if ds.PhotometricInterpretation == "MONOCHROME1" else array)
            else:
                values = np.asarray(apply_rescale(array, ds), np.float32)
                slices.append(-values if ds.PhotometricInterpretation == "MONOCHROME1" else values)
        return np.stack(slices)


def _read_datasets(folder: Path, files: Sequence[Path]):
    """``(images, segmentations)``: MR image datasets and SEG datasets of ``files``; anything else is refused."""
    pydicom = _pydicom(folder)
    from pydicom.pixels import get_decoder

    images, segs = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(path, defer_size="1 KB")
        except Exception as exc:
            raise DataError(f"{folder}: {path.name} is not a readable DICOM file ({type(exc).__name__}: {str(exc)[:120]})") from None
        modality = str(getattr(ds, "Modality", "") or "")
        sop = getattr(ds, "SOPClassUID", None)
        kind = getattr(sop, "name", str(sop)) if sop else "an object without SOP class"
        if modality == "SEG":
            segs.append((path, ds))
            continue
        if "PixelData" not in ds:
            raise DataError(f"{folder}: {path.name} is a {modality or '?'} {kind} object, not an image; "
                            "a series folder must hold MR images only (and DICOM SEG truth)")
        if modality != "MR":
            raise DataError(f"{folder}: {path.name} is {modality or 'of no modality'} ({kind}), not MR; gliomaseg reads MR series only")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{folder}: {path.name} is a multi-frame ({kind}) object; only single-frame MR Image Storage is read")
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            try:
                decoder = get_decoder(syntax)
            except NotImplementedError:
                raise DataError(f"{folder}: {path.name} uses transfer syntax {syntax.name} ({syntax}), which pydicom cannot decode") from None
            if not decoder.is_available:
                needs = "; or ".join(m.split(" - requires ", 1)[-1] for m in decoder.missing_dependencies)
                raise DataError(f"{folder}: {path.name} is compressed ({syntax.name}) and no decoder for it is installed; "
                                f"pip install {needs}")
        if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
            raise DataError(f"{folder}: {path.name} has {ds.SamplesPerPixel} samples per pixel; expected a grayscale MR image")
        images.append((path, ds))
    return images, segs


def _series(folder: Path, uid: str, members: list) -> Series:
    """Order one series' datasets along the normal and check its geometry."""
    def where(text: str) -> str:
        return f"{folder}: {text} in series {uid}"

    for path, ds in members:
        for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if keyword not in ds or ds.get(keyword) is None or len(ds.get(keyword)) == 0:
                raise DataError(where(f"{path.name} has no {keyword}"))
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in members])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOL:
        odd = next(p for (p, _), o in zip(members, orientations) if np.abs(o - orientations[0]).max() > ORIENTATION_TOL)
        raise DataError(where(f"mixed orientations ({odd.name} has {list(np.round(orientations[[0]], 4)[0])} vs "
                              "another); a series must be one stack of parallel slices"))
    frames = {str(getattr(ds, "FrameOfReferenceUID", "") or "") for _, ds in members}
    if len(frames) > 1:
        raise DataError(where(f"more than one frame of reference ({', '.join(sorted(frames))})"))
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
    spacings = {tuple(round(float(v), 4) for v in ds.PixelSpacing) for _, ds in members}
    if len(sizes) > 1 or len(spacings) > 1:
        raise DataError(where(f"slices of different sizes {sorted(sizes)} or pixel spacings {sorted(spacings)}"))
    # The limits every reader holds (gliomaseg.core.limits), checked from the headers before any pixel is decoded.
    (rows, cols), = sizes
    if max(rows, cols) > MAX_IMAGE_SIDE:
        raise DataError(where(f"slices of {rows}x{cols} pixels, over the {MAX_IMAGE_SIDE} px limit"))
    decoded = rows * cols * len(members) * 4  # read as float32 for the per-series scaling
    if decoded > MAX_DECODED_BYTES:
        raise DataError(where(f"{len(members)} slices of {rows}x{cols} would decode to {decoded / 2**20:.0f} MiB, over the "
                              f"{MAX_DECODED_BYTES / 2**20:.0f} MiB limit"))
    row_dir, col_dir = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in members])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    members = [members[i] for i in order]
    positions, along = positions[order], along[order]
    gaps = np.diff(along)
    if len(gaps) and gaps.min() < POSITION_TOL:
        k = int(np.argmin(gaps))
        raise DataError(where(f"two slices at one position ({members[k][0].name} and {members[k + 1][0].name} at "
                              f"{along[k]:.2f} mm along the normal)"))
    if len(gaps) > 1 and gaps.max() - gaps.min() > max(POSITION_TOL, GAP_RTOL * float(np.median(gaps))):
        k = int(np.argmax(gaps))
        raise DataError(where(f"uneven slice gaps ({gaps.min():.2f} to {gaps.max():.2f} mm): missing slice(s) between "
                              f"{members[k][0].name} and {members[k + 1][0].name} ({along[k]:.2f} and {along[k + 1]:.2f} mm)"))
    first = members[0][1]
    if len(gaps):
        step = float(np.median(gaps))
    else:
        step = float(getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 0) or 1.0)
    pixel = [float(v) for v in first.PixelSpacing]
    return Series(folder, uid, [ds for _, ds in members], orientations[0], positions, (pixel[0], pixel[1], step),
                  frames.pop(), str(getattr(first, "SeriesNumber", "") or ""), str(getattr(first, "SeriesDescription", "") or ""))


def read_series(folder: Path, files: Sequence[Path] | None = None) -> tuple[list[Series], list[tuple[Path, object]]]:
    """The MR series of ``folder``'s DICOM files (or of ``files``), and its SEG objects ``(path, dataset)``."""
    folder = Path(folder)
    if files is None:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom(p))
    images, segs = _read_datasets(folder, files)
    groups: dict[str, list] = {}
    for path, ds in images:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return [_series(folder, uid, members) for uid, members in groups.items()], segs


def _pick(folder: Path, series: list[Series], selector: str | None) -> Series:
    if selector is not None:
        found = [s for s in series if selector in (s.number, s.description, s.uid)]
        if len(found) != 1:
            raise DataError(f"{folder}: {len(found)} series match {selector!r}; the folder holds {', '.join(s.label for s in series)}")
        return found[0]
    if len(series) != 1:
        raise DataError(f"{folder}: holds {len(series)} MR series ({', '.join(s.label for s in series) or 'none'}); "
                        "name one as FOLDER@SERIES (its number, description or UID)")
    return series[0]


def _same_geometry(reference: Series, other: Series, role: str) -> None:
    problems = []
    if other.frame_of_reference != reference.frame_of_reference:
        problems.append(f"more than one frame of reference ({reference.frame_of_reference} and {other.frame_of_reference})")
    if other.shape != reference.shape or len(other.datasets) != len(reference.datasets):
        problems.append(f"{len(other.datasets)} slices of {other.shape} vs {len(reference.datasets)} of {reference.shape}")
    elif (np.abs(other.orientation - reference.orientation).max() > ORIENTATION_TOL
          or np.abs(other.positions - reference.positions).max() > POSITION_TOL
          or not np.allclose(other.spacing, reference.spacing, atol=1e-3)):
        problems.append("different orientation, slice positions or spacing")
    if problems:
        raise DataError(f"{other.folder}: the {role} series is not on the FLAIR series' geometry ({reference.folder}): "
                        f"{'; '.join(problems)}; the three series must share one geometry (nothing is resampled)")


@dataclass
class DicomGeometry(Geometry):
    """A :class:`~gliomaseg.data.nifti.Geometry` with the real affine, plus the series the slices came from (by role)."""

    series: dict = field(default_factory=dict, repr=False)

    @property
    def nbytes(self) -> int:
        """Memory the kept datasets hold (their pixel data, and pydicom's decoded copy once made): kept to write
        the Segmentation, so a memory budget of cases must count them."""
        total = int(self.affine.nbytes)
        for series in self.series.values():
            for ds in series.datasets:
                pixels = ds.get("PixelData")
                total += len(pixels) if pixels is not None else 0
                cached = getattr(ds, "_pixel_array", None)
                total += int(cached.nbytes) if cached is not None else 0
        return total

    @property
    def reference(self) -> Series:
        """The series a segmentation references first: FLAIR, the sequence the tumour is outlined on."""
        return self.series["flair"]


def _geometry(folder: Path, series: dict[str, Series]) -> DicomGeometry:
    import nibabel as nib
    from nibabel import orientations

    flair = series["flair"]
    rows, cols = flair.shape
    shape = (cols, rows, len(flair.datasets))
    affine = flair.affine()
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms((flair.spacing[1], flair.spacing[0], flair.spacing[2]))
    header.set_xyzt_units("mm")
    transform = orientations.ornt_transform(nib.io_orientation(affine), orientations.axcodes2ornt(LPS))
    return DicomGeometry(Path(folder), shape, affine, header, transform, series=dict(series))


def _to_uint8(series: Series) -> np.ndarray:
    pixels = series.pixels()
    if pixels.dtype == np.uint8:
        return pixels
    warnings.warn(f"{series.folder}: {series.label} scaled to 8 bits (its 0.5th..99.5th percentile -> 0..255)", InputWarning, stacklevel=4)
    return np.stack(scale_volume(list(pixels)))


@dataclass
class DicomCase:
    """A case read from DICOM: its name, axial slices (uint8 RGB (rows, cols, 3)), geometry and truth (or None)."""

    name: str
    images: list[np.ndarray]
    geometry: DicomGeometry
    truth: list[np.ndarray] | None
    single_sequence: bool = False
    truth_path: Path | None = None
    filled: tuple[str, ...] = ()  # the roles (pre, post) not given, filled with FLAIR and warned about here


def _build_case(name: str, folder: Path, roles: dict[str, Series], segs: list, *, single: bool = False) -> DicomCase:
    if "flair" not in roles:
        raise DataError(f"{folder}: no FLAIR series named; give flair=DIR (pre= and post= are optional: FLAIR takes a missing one's place)")
    flair = roles["flair"]
    for role, series in roles.items():
        if role != "flair":
            _same_geometry(flair, series, role)
    missing = [r for r in ROLES if r not in roles]
    if missing and not single:
        warnings.warn(f"{folder}: no {' and no '.join(missing)} series: FLAIR copied into the missing channel(s), as kaggle_3m "
                      "stores a missing sequence; the mask may be worse", InputWarning, stacklevel=3)
    geometry = _geometry(folder, roles)
    from nibabel import orientations

    volumes = {role: _to_uint8(series) for role, series in roles.items()}
    native = np.stack([volumes.get(role, volumes["flair"]).transpose(2, 1, 0) for role in ROLES], axis=-1)  # (cols, rows, N, 3)
    lps = orientations.apply_orientation(native, geometry.transform)
    images = [np.ascontiguousarray(lps[:, :, k].transpose(1, 0, 2)) for k in range(lps.shape[2])]
    uids = {s.uid for s in roles.values()}
    truth, truth_path = None, None
    for path, ds in sorted(segs, key=lambda item: item[0].name):
        referenced = {str(item.SeriesInstanceUID) for item in getattr(ds, "ReferencedSeriesSequence", [])}
        if referenced & uids:
            truth, truth_path = read_segmentation_masks(path, geometry), path
            break
    return DicomCase(name, images, geometry, truth, single, truth_path, filled=() if single else tuple(missing))


def _slices_of(masks: np.ndarray, geometry: Geometry) -> list[np.ndarray]:
    from nibabel import orientations

    lps = orientations.apply_orientation(masks.transpose(2, 1, 0) > 0, geometry.transform)  # (N, rows, cols) -> native -> LPS
    return [np.ascontiguousarray(lps[:, :, k].T).astype(np.uint8) for k in range(lps.shape[2])]


def read_segmentation_masks(path: Path, geometry: DicomGeometry) -> list[np.ndarray]:
    """A DICOM SEG's segments (all of them, combined) on a case's slices -> uint8 0/1 (rows, cols) per axial slice.

    The SEG's frames are matched to the case's source images by SOP Instance UID (any of its series);
    a source image without a frame is empty.
    """
    hd = _highdicom(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM Segmentation ({type(exc).__name__}: {str(exc)[:160]})") from None
    referenced = {str(item.SeriesInstanceUID) for item in getattr(seg, "ReferencedSeriesSequence", [])}
    for series in [geometry.reference, *geometry.series.values()]:
        if series.uid in referenced:
            uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
            try:
                array = seg.get_pixels_by_source_instance(uids, combine_segments=False, assert_missing_frames_are_empty=True,
                                                          dtype=np.uint8)
            except Exception as exc:
                raise DataError(f"{path}: its frames do not map onto {series.folder} ({type(exc).__name__}: {str(exc)[:160]})") from None
            return _slices_of(array.max(axis=-1) if array.ndim == 4 else array, geometry)
    raise DataError(f"{path}: the segmentation references none of the case's series ({', '.join(sorted(referenced))})")


def read_folder(folder: Path, files: Sequence[Path], mapping_file: Path | None = None) -> list[DicomCase]:
    """The DICOM case(s) of one folder: a mapping file names the series by role; else the folder's one series.

    ``files``: the folder's DICOM files (its SEG objects are truth for the case whose series they reference).
    """
    folder = Path(folder)
    if mapping_file is not None:
        roles = read_mapping_file(mapping_file)
        return [read_sequences(roles, name=folder.name, extra_files=files)]
    series, segs = read_series(folder, files)
    if not series:
        raise DataError(f"{folder}: DICOM files but no MR image series (only {len(segs)} segmentation(s))")
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} MR series ({', '.join(s.label for s in series)}); say which is which "
                        f"with --sequences pre=DIR@SERIES flair=DIR@SERIES post=DIR@SERIES or a {SEQUENCES_FILE}")
    return [_build_case(check_name(folder.name, "case name", folder), folder, {"flair": series[0]}, segs, single=True)]


def read_mapping_file(path: Path) -> dict[str, str]:
    """``role=DIR`` lines (``#`` comments) -> {role: spec}, each DIR made relative to the file's folder."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: sequence mapping cannot be read ({exc})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    roles = parse_sequences(entries, path)
    return {role: str(path.parent / spec) for role, spec in roles.items()}


def parse_sequences(entries: Sequence[str], source: str | Path = "--sequences") -> dict[str, str]:
    """``["pre=DIR", "flair=DIR@5", ...]`` -> {role: spec}; roles are pre, flair (required) and post."""
    roles: dict[str, str] = {}
    for entry in entries:
        role, sep, spec = entry.partition("=")
        role = role.strip().lower()
        if not sep or role not in ROLES or not spec.strip():
            raise DataError(f"{source}: {entry!r} is not ROLE=DIR with ROLE one of {', '.join(ROLES)}")
        if role in roles:
            raise DataError(f"{source}: {role} is named twice")
        roles[role] = spec.strip()
    if "flair" not in roles:
        raise DataError(f"{source}: no flair=DIR; FLAIR is needed (pre and post are optional)")
    return roles


def read_sequences(roles: Mapping[str, str | Path], *, name: str | None = None, extra_files: Sequence[Path] = ()) -> DicomCase:
    """One case from series named by role (``{"pre": DIR, "flair": "DIR@5", ...}``); SEG truth is looked for in their folders.

    The case is named ``name``, else after the folder that holds the series folders (or the one folder).
    """
    chosen: dict[str, Series] = {}
    segs: list = []
    read: dict[Path, list[Series]] = {}
    for role, spec in roles.items():
        text = str(spec)
        folder_text, _, selector = text.rpartition("@") if "@" in Path(text).name else (text, "", "")
        folder = Path(folder_text)
        if not folder.is_dir():
            raise DataError(f"{folder}: the {role} series folder does not exist")
        if folder not in read:
            read[folder], found = read_series(folder)
            segs.extend(found)
        chosen[role] = _pick(folder, read[folder], selector or None)
    folders = [str(Path(f).resolve()) for f in read]
    common = Path(os.path.commonpath(folders))
    if extra_files:
        _, found = _read_datasets(Path(extra_files[0]).parent, [p for p in extra_files])
        segs.extend(found)
    elif len(read) > 1:
        beside = [p for p in common.iterdir() if p.is_file() and is_dicom(p)]
        if beside:
            segs.extend(_read_datasets(common, beside)[1])
    case = name or common.name
    folder = chosen["flair"].folder if len(read) == 1 and name is None else common
    return _build_case(check_name(case, "case name", folder), folder, chosen, segs)


def segmentation_file_case(path: Path) -> DicomCase:
    """A DICOM SEG file given on its own (``score --truth case_seg.dcm``): its source series are looked for beside it.

    The case is named after the file (``case_seg.dcm`` -> ``case``); the series its frames were drawn on
    must be in the SEG's folder or a folder below it.
    """
    pydicom = _pydicom(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if str(getattr(ds, "Modality", "")) != "SEG":
        raise DataError(f"{path}: a {getattr(ds, 'Modality', '?')} object; give a series folder, or a DICOM SEG as truth")
    wanted = {str(item.SeriesInstanceUID) for item in getattr(ds, "ReferencedSeriesSequence", [])}
    drawn_on = {str(source.ReferencedSOPInstanceUID) for frame in getattr(ds, "PerFrameFunctionalGroupsSequence", [])[:1]
                for derivation in getattr(frame, "DerivationImageSequence", []) for source in getattr(derivation, "SourceImageSequence", [])}
    name = path.name[: -len(".dcm")] if path.name.lower().endswith(".dcm") else path.stem
    name = name[: -len(SEG)] if name.endswith(SEG) else name
    candidates: list[Series] = []
    for folder in [path.parent, *sorted(p for p in path.parent.rglob("*") if p.is_dir())]:
        files = [p for p in folder.iterdir() if p.is_file() and p != path and is_dicom(p) and _modality(p) == "MR"]
        if files:
            try:
                candidates.extend(s for s in read_series(folder, files)[0] if s.uid in wanted)
            except DataError:
                continue
    candidates.sort(key=lambda s: not drawn_on & {str(d.SOPInstanceUID) for d in s.datasets})
    if not candidates:
        raise DataError(f"{path}: the series it segments ({', '.join(sorted(wanted))}) is not in {path.parent} or below; "
                        "put the source series beside the SEG")
    return _build_case(check_name(name, "case name", path), candidates[0].folder, {"flair": candidates[0]}, [(path, ds)], single=True)


def is_segmentation(path: Path) -> bool:
    """Whether a DICOM file is a Segmentation (Modality SEG)."""
    return _modality(path) == "SEG"


def _modality(path: Path) -> str:
    pydicom = _pydicom(path)
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    except Exception:
        return ""


def write_segmentation(masks: Sequence[np.ndarray], geometry: DicomGeometry, out: str | Path, *,
                       model: str | None = None, label: str = SEGMENT_LABEL) -> Path:
    """Write a binary DICOM Segmentation of ``masks`` (uint8 0/1 (rows, cols) per axial slice) referencing the source series.

    One segment, ``label``, category Morphologically Abnormal Structure (SCT 49755003), type Neoplasm
    (SCT 108369006), anatomic region Brain. ``model`` set: an AUTOMATIC segment with the algorithm
    identification (gliomaseg, its version, ``model`` as a parameter); ``None``: a MANUAL one (a reader's
    truth, as ``convert`` writes it). Every source slice has a frame (empty ones too), in source order,
    so frame k maps to the FLAIR series' k-th slice along the normal; pre / post are further source images.
    """
    hd = _highdicom(out)
    from pydicom.sr.codedict import codes

    from gliomaseg import __version__

    native = geometry.to_native(masks)  # (cols, rows, N) in the source's voxel order
    frames = np.ascontiguousarray(native.transpose(2, 1, 0) > 0)  # (N, rows, cols), frame k = source slice k
    source = geometry.reference
    further = [ds for s in {s.uid: s for s in geometry.series.values()}.values() if s.uid != source.uid for ds in s.datasets]
    algorithm = None
    if model is not None:
        algorithm = hd.AlgorithmIdentificationSequence(name="gliomaseg", family=codes.cid7162.ArtificialIntelligence,
                                                       version=__version__, parameters={"model": model[:64]})
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label, segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, anatomic_regions=[codes.SCT.Brain],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if model else hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        algorithm_identification=algorithm)
    number = int(source.number) if source.number.isdigit() else 0
    for ds in [*source.datasets, *further]:  # Type 2 patient / study attributes a SEG copies: empty when a source lacks them
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    try:
        seg = _segmentation(hd, source, further, frames, description, number, model, label)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{source.folder}: a DICOM Segmentation of this series cannot be written ({type(exc).__name__}: {str(exc)[:200]})") from None
    return atomic_write(out, lambda tmp: seg.save_as(tmp))


_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
          "AccessionNumber", "StudyID")


def _segmentation(hd, source: Series, further: list, frames: np.ndarray, description, number: int, model: str | None, label: str):
    from pydicom.uid import generate_uid

    from gliomaseg import __version__

    return hd.seg.Segmentation(
        source_images=source.datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=generate_uid(), series_number=number + 1000,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="gliomaseg",
        manufacturer_model_name=(model or "manual")[:64], software_versions=__version__, device_serial_number="none",
        content_label="GLIOMA", content_description=f"{label} ({'gliomaseg ' + model if model else 'manual'})"[:64],
        series_description=f"SEG {label}"[:64], omit_empty_frames=False, further_source_images=further or None)


def write_mr_series(volume: np.ndarray, folder: str | Path, *, spacing: tuple[float, float, float], patient: str, study_uid: str,
                    frame_of_reference: str, series_number: int, description: str, study_date: str = "") -> list[Path]:
    """Write an 8-bit MR series: ``volume`` uint8 (N, rows, cols) in LPS slice order (rows anterior to posterior,
    columns right to left, slice k at k x spacing along Superior) as ``folder/<k>.dcm`` (MR Image Storage).

    ``spacing`` is (between rows, between columns, between slices) in mm. Values are stored in 16 bits with
    BitsStored 8, so :meth:`Series.pixels` reads them back as they are. UIDs are derived from the
    patient, series and slice (synthetic but valid and stable).
    """
    _pydicom(folder)
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    from gliomaseg import __version__

    folder = Path(folder)
    series_uid = generate_uid(entropy_srcs=["gliomaseg", patient, study_uid, description])
    written = []
    for k, image in enumerate(np.asarray(volume, np.uint8)):
        uid = generate_uid(entropy_srcs=["gliomaseg", series_uid, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000" if study_date else ""
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "", "MR", "gliomaseg"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "converted by gliomaseg"
        ds.SeriesDescription = description
        ds.ManufacturerModelName, ds.SoftwareVersions = "gliomaseg convert", __version__
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"{patient}^", patient, "", ""
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "BRAIN"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "2D"
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.SpacingBetweenSlices = f"{spacing[2]:g}"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "", "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", str(series_number), str(k + 1)
        ds.PatientOrientation = ["L", "P"]
        ds.ImagePositionPatient = [0.0, 0.0, round(k * float(spacing[2]), 6)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.SliceLocation = f"{k * float(spacing[2]):g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape
        ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 8, 7, 0
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = image.astype("<u2").tobytes()
        path = folder / f"{k + 1}.dcm"
        written.append(atomic_write(path, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True)))
    return written
