"""Slice files in the kaggle_3m layout: ``<patient>/<patient>_<n>.tif`` with ``<patient>_<n>_mask.tif`` beside it as truth."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from gliomaseg.core.io import write_bytes
from gliomaseg.data.files import IMAGE_SUFFIXES, read_image, read_mask
from gliomaseg.data.formats.base import MASK, OVERLAY, PRED, PatientInput, Problems, SliceFormat, SliceInput, slice_number
from gliomaseg.data.overlay import encode_png


class SliceFiles(SliceFormat):
    """PNG, TIFF, JPEG or BMP slices (uint8 RGB) and their 0/255 masks; predictions are ``<slice>_pred.png``."""

    name = "slices"
    endings = IMAGE_SUFFIXES
    prediction_ending = ".png"
    truth_endings = (".tif", ".png")  # looked for after the image's own ending

    def truth_beside(self, image: Path) -> Path | None:
        """``<stem>_mask`` with the image's ending, ``.tif`` or ``.png``, when one is beside the image."""
        for suffix in dict.fromkeys((image.suffix, *self.truth_endings)):
            candidate = image.with_name(self.mask_name(image.stem, suffix))
            if candidate.is_file():
                return candidate
        return None

    def image_of_mask(self, mask: Path) -> Path | None:
        """The image a ``<stem>_mask`` file is the truth of, when it is beside it."""
        stem = mask.stem[: -len(MASK)]
        return next((c for c in (mask.with_name(f"{stem}{s}") for s in (mask.suffix, *self.endings)) if c.is_file()), None)

    def prediction_name(self, name: str) -> str:
        return f"{name}{PRED}{self.prediction_ending}"

    def overlay_name(self, name: str) -> str:
        """The file name of a slice's contour overlay."""
        return f"{name}{OVERLAY}.png"

    def prediction_candidates(self, folders: Sequence[Path], name: str) -> list[Path]:
        """Where ``score`` looks for a slice's predicted mask: ``<slice>_pred.png``, then ``<slice>.png``, in each folder."""
        return [folder / tail for folder in folders for tail in (self.prediction_name(name), f"{name}{self.prediction_ending}")]

    def slice_input(self, patient: str, path: Path) -> SliceInput:
        return SliceInput(patient, path.stem, path, self.truth_beside(path), slice_number(path))

    def open(self, paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
        """Single slice files: one patient per parent folder (keyed by the folder, not its name: see
        :func:`~gliomaseg.data.sources.open_source`)."""
        patients: dict[Path, PatientInput] = {}
        for path in paths:
            patient = path.parent.name or "input"
            key = path.parent.resolve()
            patients.setdefault(key, PatientInput(patient, [])).slices.append(self.slice_input(patient, path))
        return list(patients.values())

    def read_image(self, path: Path, **options) -> np.ndarray:
        return read_image(path, **options)

    def read_mask(self, path: Path, **options) -> np.ndarray:
        return read_mask(path, **options)

    def write_mask(self, mask: np.ndarray, out: Path, geometry=None, **options) -> Path:
        """A 0/1 mask as a 0/255 PNG, atomically."""
        return write_bytes(self.encode_mask(mask), out)

    @staticmethod
    def encode_mask(mask: np.ndarray) -> bytes:
        """The bytes of a 0/1 mask's 0/255 PNG (as :meth:`write_mask` writes it)."""
        return encode_png(mask * 255)


SLICES = SliceFiles()
