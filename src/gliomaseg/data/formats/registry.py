"""The registry of formats: which :class:`~.base.SliceFormat` reads a file, by its ending (nnU-Net's ``reader_writer_registry``).

``format_for(path)`` gives the format of a file (the longest registered ending wins: ``.nii.gz`` before ``.gz``);
a new format plugs in with :func:`register`.
"""

from __future__ import annotations

from pathlib import Path

from gliomaseg.data.formats.base import MASK, SliceFormat, is_truth_stem
from gliomaseg.data.formats.dicom_series import DICOM
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.formats.prepared_csv import CSV
from gliomaseg.data.formats.slice_files import SLICES

FORMATS: dict[str, SliceFormat] = {}  # ending -> format


def register(fmt: SliceFormat) -> SliceFormat:
    """Register ``fmt`` for files whose names end with any of its endings (lower case, with the dot)."""
    for ending in fmt.endings:
        FORMATS[ending] = fmt
    return fmt


for _fmt in (SLICES, CSV, NIFTI, DICOM):
    register(_fmt)


def ending(path: str | Path) -> str | None:
    """The longest registered ending of ``path`` (``.nii.gz`` before ``.gz``), or ``None``."""
    name = Path(path).name.lower()
    matches = [e for e in FORMATS if name.endswith(e)]
    return max(matches, key=len) if matches else None


def format_for(path: str | Path) -> SliceFormat | None:
    """The format that reads ``path``, by its ending; ``None`` for an ending no format reads."""
    found = ending(path)
    return FORMATS[found] if found else None


def split_name(name: str) -> tuple[str, str]:
    """``(stem, ending)`` of a file name, the ending as written: a registered one (``.nii.gz``), else the last suffix."""
    found = ending(name)
    if found:
        return name[: -len(found)], name[-len(found):]
    path = Path(name)
    return path.stem, path.suffix


def is_mask(path: str | Path) -> bool:
    """Whether a file is a truth mask by its name (``<stem>_mask<ending>``), in any format or none."""
    fmt = format_for(path)
    return fmt.is_mask(path) if fmt is not None else is_truth_stem(Path(path).stem, (MASK,))


def supported_endings() -> list[str]:
    return sorted(FORMATS)
