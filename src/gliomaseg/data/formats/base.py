"""What every format shares: the slice and patient a reader gives, the name markers, and the :class:`SliceFormat` class.

The names are one convention (README "Data", "Inference"):

- ``<image>_mask<ending>`` beside an image is its truth (``_mask.tif`` beside a kaggle_3m slice,
  ``<case>_mask.nii.gz`` beside a NIfTI case); ``predict`` writes a volume's predicted mask under that name too.
- ``<slice>_pred.png`` is a slice's predicted mask and ``<slice>_overlay.png`` its overlay.
- ``<case>_seg.dcm`` is a DICOM case's Segmentation; the viewer also takes ``<volume>_seg.nii.gz`` as a volume's truth.
- a slice's number is the trailing ``_<n>`` of its stem (``TCGA_CS_4941_19960909_12.tif`` -> 12).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gliomaseg.core.errors import DataError
from gliomaseg.data.files import read_image, read_mask
from gliomaseg.data.nifti import Geometry

MASK = "_mask"  # the truth beside an image (and a volume's predicted mask)
PRED = "_pred"  # a slice's predicted mask
OVERLAY = "_overlay"  # a slice's overlay
SEG = "_seg"  # a DICOM Segmentation; in the viewer also a volume's truth
UPLOAD_TRUTH_MARKERS = (MASK, SEG)  # the viewer: ``<name>_mask`` or ``<name>_seg`` is the truth of ``<name>``
_NUMBER = re.compile(r"_(\d+)$")
Problems = list[tuple[str, str]]


def slice_number(path: Path) -> int | None:
    """The trailing ``_<n>`` of a file's stem (``TCGA_CS_4941_19960909_12.tif`` -> 12)."""
    match = _NUMBER.search(path.stem)
    return int(match.group(1)) if match else None


def patient_of_stem(stem: str, markers: Sequence[str] = UPLOAD_TRUTH_MARKERS) -> str:
    """A slice stem without its truth marker and slice number (``P_12_mask`` -> ``P``)."""
    for marker in markers:
        if stem.endswith(marker):
            stem = stem[: -len(marker)]
            break
    return _NUMBER.sub("", stem)


def is_truth_stem(stem: str, markers: Sequence[str] = (MASK,)) -> bool:
    """Whether a stem names a truth file (ends with one of ``markers``)."""
    return stem.endswith(tuple(markers))


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
    # Sequences the reader itself filled with FLAIR (and said so): predict's check finds them too, and does not
    # say it twice. Names as in gliomaseg.data.sequences.SEQUENCES.
    reported_missing: tuple[str, ...] = ()


class SliceFormat(ABC):
    """One file format: its endings, how it opens into patients, reads images and masks, writes masks, and its names.

    A subclass is registered with :func:`gliomaseg.data.formats.registry.register`. The defaults suit a format
    whose file name is ``<stem><ending>`` and whose truth is ``<stem>_mask<ending>``.
    """

    name: str = ""  # short label: "slices", "nifti", "dicom", "csv"
    endings: tuple[str, ...] = ()  # lower case, with the dot
    prediction_ending: str = ""  # the ending of the predicted masks it writes

    def ending(self, path: str | Path) -> str | None:
        """The longest of :attr:`endings` that ``path`` ends with (any case), or ``None``."""
        name = Path(path).name.lower()
        matches = [e for e in self.endings if name.endswith(e)]
        return max(matches, key=len) if matches else None

    def stem(self, path: str | Path) -> str:
        """The file name without its ending (``case.nii.gz`` -> ``case``)."""
        path = Path(path)
        found = self.ending(path)
        return path.name[: -len(found)] if found else path.stem

    def is_mask(self, path: str | Path) -> bool:
        """Whether ``path`` is a truth mask by its name (``<stem>_mask<ending>``), not an image."""
        return is_truth_stem(self.stem(path))

    def mask_name(self, image_name: str, ending: str | None = None) -> str:
        """The file name of the truth of the image whose stem is ``image_name``."""
        return f"{image_name}{MASK}{ending or self.endings[0]}"

    def prediction_name(self, name: str) -> str:
        """The file name ``predict`` gives the predicted mask of ``name`` (a slice or a case)."""
        return f"{name}{MASK}{self.prediction_ending}"

    @abstractmethod
    def open(self, paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
        """The patients in ``paths`` (files of this format); a bad file of a batch goes to ``problems``."""

    def read_image(self, path: Path, **options: Any) -> Any:
        raise DataError(f"{path}: a {self.name} file holds no image to read")

    def read_mask(self, path: Path, **options: Any) -> Any:
        raise DataError(f"{path}: a {self.name} file holds no mask to read")

    def write_mask(self, mask: Any, out: Path, geometry: Any = None, **options: Any) -> Path:
        raise DataError(f"{out}: masks are not written as {self.name} files")
