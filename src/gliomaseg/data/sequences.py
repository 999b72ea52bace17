"""Missing MRI sequences: a channel that is a copy of FLAIR.

A kaggle_3m slice holds three sequences as RGB: pre-contrast, FLAIR, post-contrast. A patient scanned without
pre-contrast or post-contrast carries a copy of FLAIR in that channel (the dataset's README). The model then
sees less than it was trained on, and such patients score lower (``docs/results/crossval*/patients.csv``), so
every entry point says so: ``prepare`` (``data_info.csv``, ``summary.csv``), ``predict`` (``predictions.csv``,
``patients.csv``, a warning) and the viewer.

On the 65 patients of ``../shared/data/kaggle_3m`` a copied channel differs from FLAIR by exactly 0 over the
brain, and a real sequence by 8 to 39 (mean absolute difference of 0-255 values) over a patient's slices;
:data:`COPY_TOLERANCE` sits far below the latter and leaves room for lossy re-encoding.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from gliomaseg.data.intensity import brain_mask_of_planes

# Channel order of a slice, and the sequence each channel holds.
SEQUENCES = ("pre-contrast", "FLAIR", "post-contrast")
FLAIR_CHANNEL = 1
# A channel whose mean absolute difference to FLAIR over the brain is at most this (of 255) is a copy of FLAIR.
COPY_TOLERANCE = 1.0
# A slice with fewer brain pixels than this says nothing (the top of the head, an empty slice).
MIN_BRAIN_PIXELS = 200


class SequenceCheck:
    """Accumulates, over any number of (H, W, 3) uint8 slices, how far pre- and post-contrast are from FLAIR."""

    def __init__(self) -> None:
        self.difference = np.zeros(3, np.float64)  # summed |channel - FLAIR| over brain pixels, per channel
        self.pixels = 0

    def add(self, image: np.ndarray) -> "SequenceCheck":
        planes = cv2.split(np.ascontiguousarray(image))
        brain = brain_mask_of_planes(planes)
        count = cv2.countNonZero(brain)
        if count:
            for channel in range(3):
                if channel != FLAIR_CHANNEL:  # the exact sum of |channel - FLAIR| over the brain (OpenCV's L1 norm)
                    self.difference[channel] += cv2.norm(planes[channel], planes[FLAIR_CHANNEL], cv2.NORM_L1, mask=brain)
            self.pixels += count
        return self

    def __iadd__(self, other: "SequenceCheck") -> "SequenceCheck":
        """Fold in another check's sums: a patient's check is the sum of its slices' checks."""
        self.difference += other.difference
        self.pixels += other.pixels
        return self

    def missing(self) -> tuple[str, ...]:
        """The sequences stored as a copy of FLAIR, in channel order; ``()`` when none, or too little brain to tell."""
        if self.pixels < MIN_BRAIN_PIXELS:
            return ()
        mean = self.difference / self.pixels
        return tuple(SEQUENCES[c] for c in range(3) if c != FLAIR_CHANNEL and mean[c] <= COPY_TOLERANCE)


def missing_sequences(images: Iterable[np.ndarray]) -> tuple[str, ...]:
    """The sequences that are a copy of FLAIR over all ``images`` together (one patient, or one slice)."""
    check = SequenceCheck()
    for image in images:
        check.add(image)
    return check.missing()


def describe(missing: Sequence[str]) -> str:
    """The column value: ``""`` for none, else the sequences joined by ``+`` (``pre-contrast+post-contrast``)."""
    return "+".join(missing)


def warning_text(patient: str, missing: Sequence[str]) -> str:
    """One plain sentence for the terminal and the viewer."""
    names = " and ".join(missing)
    return (f"{patient}: {names} {'is' if len(missing) == 1 else 'are'} missing (stored as a copy of FLAIR); "
            "the model sees less than it was trained on, so expect a lower Dice")
