"""Per-patient intensity standardization: each channel z-scored over the patient's brain pixels.

MRI intensities have no absolute scale: the same tissue can be twice as bright in another scanner or
protocol. ``patient`` mode puts every patient on one scale before the network sees it: per channel,
the brain pixels of all of the patient's slices get mean 0 and standard deviation 1 (nnU-Net's MRI
normalization), and the background stays 0.

The result is written back to uint8 (``Z_CENTRE + Z_SCALE * z``, so z from -3.2 to +3.2 fits) so that
augmentation, the encoder's fixed normalization, ONNX inputs and every predictor stay as they are:
the one extra step runs on a patient's uint8 slices, in :class:`~gliomaseg.data.dataset.SliceDataset`
for training and in :func:`~gliomaseg.inference.segment.predict_probabilities` for inference.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from gliomaseg.core.errors import ConfigError, InputWarning
from gliomaseg.data.files import read_image

# fixed: the encoder's statistics only (the case study's way); patient: z-score per patient first.
INTENSITY_MODES = ("fixed", "patient")
DEFAULT_INTENSITY = "fixed"
BRAIN_THRESHOLD = 10  # a pixel whose channels are all at most this (of 255) is background (air)
Z_CENTRE = 128.0
Z_SCALE = 40.0
# What each mode does to a slice before the encoder's normalization: the one wording that the model card and
# the ONNX metadata both use.
INTENSITY_MEANING = {
    "fixed": "slices as read (no per-patient step)",
    "patient": (f"first standardized per patient: per channel, the patient's brain pixels (any channel > {BRAIN_THRESHOLD}) "
                f"z-scored over all of its slices and stored as {Z_CENTRE:.0f} + {Z_SCALE:.0f} * z, background 0 "
                "(gliomaseg.data.intensity.standardize_patient)"),
}
# Fewer slices than this make per-patient statistics a guess: inference warns (a patient has 20 to 88 slices).
MIN_PATIENT_SLICES = 10


def check_intensity(mode: str) -> str:
    if mode not in INTENSITY_MODES:
        raise ConfigError(f"unknown intensity mode {mode!r}; valid: {', '.join(INTENSITY_MODES)}")
    return mode


def brain_mask_of_planes(planes: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`brain_mask_255` of a slice already split into its three (H, W) planes (``cv2.split``)."""
    red, green, blue = planes
    # threshold, not compare: OpenCV reads a 1x1 array beside a number as two scalars
    return cv2.threshold(cv2.max(cv2.max(red, green), blue), BRAIN_THRESHOLD, 255, cv2.THRESH_BINARY)[1]


def brain_mask_255(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8, 255 on the brain pixels of an (H, W, 3) uint8 slice and 0 elsewhere: :func:`brain_mask` as an OpenCV mask."""
    return brain_mask_of_planes(cv2.split(np.ascontiguousarray(image)))


def brain_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels brighter than :data:`BRAIN_THRESHOLD` in any channel of an (H, W, 3) uint8 slice."""
    return brain_mask_255(image).astype(bool)


def patient_statistics(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation, shape (3,) each, over the brain pixels of all ``images``.

    A patient with no brain pixels at all (every slice dark) gets mean 0 and std 1 (no division by
    zero); standardized, all of its pixels are background, 0.
    """
    # uint8 pixels: a histogram per channel (OpenCV's, over the brain mask) gives the exact sums without a float copy
    histogram = np.zeros((3, 256), np.float64)
    for image in images:
        planes = cv2.split(np.ascontiguousarray(image))
        brain = brain_mask_of_planes(planes)
        for channel, plane in enumerate(planes):
            histogram[channel] += cv2.calcHist([plane], [0], brain, [256], [0, 256]).ravel()
    count = float(histogram[0].sum())
    if count == 0:
        return np.zeros(3), np.ones(3)
    values = np.arange(256, dtype=np.float64)
    mean = histogram @ values / count
    std = np.sqrt(np.maximum(histogram @ values**2 / count - mean**2, 0.0))
    return mean, np.where(std > 1e-6, std, 1.0)


def standardize(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """One (H, W, 3) uint8 slice z-scored with its patient's statistics, back in uint8; background stays 0."""
    # every uint8 value's result, per channel, looked up: the same float32 arithmetic, once per value not per pixel
    values = np.arange(256, dtype=np.float32)[:, None]
    z = (values - mean.astype(np.float32)) / std.astype(np.float32)
    table = np.clip(np.rint(Z_CENTRE + Z_SCALE * z), 1, 255).astype(np.uint8).reshape(256, 1, 3)
    image = np.ascontiguousarray(image)
    out = cv2.LUT(image, table)
    return cv2.bitwise_and(out, out, mask=brain_mask_255(image))


class PatientStatistics:
    """:func:`patient_statistics` of each patient over all of its rows in a slice table (``patient``,
    ``image_path``), computed when first asked for and kept: the dataset and int8 calibration share this."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._known: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, patient: str) -> tuple[np.ndarray, np.ndarray]:
        if patient not in self._known:
            paths = self.frame.loc[self.frame["patient"] == patient, "image_path"]
            self._known[patient] = patient_statistics([read_image(path) for path in paths])
        return self._known[patient]

    def __contains__(self, patient: str) -> bool:
        return patient in self._known

    def from_images(self, patient: str, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The statistics of ``patient`` from all of its slices, already read by the caller (kept like the others)."""
        self._known[patient] = patient_statistics(images)
        return self._known[patient]


def standardize_patient(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """All slices of one patient, standardized with statistics over all of them.

    Warns when there are fewer than :data:`MIN_PATIENT_SLICES`: the statistics of a few slices differ from
    those of the whole volume the model was trained with (give a patient's whole volume).
    """
    if len(images) < MIN_PATIENT_SLICES:
        warnings.warn(f"this model standardizes each patient over all of its slices, and only {len(images)} were given "
                      f"(fewer than {MIN_PATIENT_SLICES}): its statistics may differ from the whole volume's; "
                      "give all of the patient's slices", InputWarning, stacklevel=2)
    mean, std = patient_statistics(images)
    return [standardize(image, mean, std) for image in images]
