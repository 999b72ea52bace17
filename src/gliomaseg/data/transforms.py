"""Augmentations (albumentations) and normalization.

The case study's training augmentations: flips, RandomRotate90, Transpose, a small
shift-scale-rotate, ImageNet normalization. Geometry runs on uint8 image and mask together.

Two optional augmentations show the model what new patients bring (both off by default, so the case study's
pipeline is unchanged unless asked for):

- :class:`ChannelIntensity`: per channel, over the brain only, a random contrast, brightness and gamma change
  (nnU-Net's default intensity set), so a scan with little grey/white-matter contrast is among what training sees.
- :class:`MissingSequence`: pre-contrast and/or post-contrast replaced by FLAIR, exactly as kaggle_3m stores a
  missing sequence (its README), so such a patient is not a stranger to the model.

Both run on the slice as the dataset hands it over, i.e. after the per-patient standardization of
:mod:`gliomaseg.data.intensity` where it applies: training sees what inference sees.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

# albumentations asks PyPI for a newer version when first imported (up to 2 s on a machine without a network);
# gliomaseg makes no network calls, so that check is off unless the user turned it on explicitly.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from gliomaseg.core.defaults import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from gliomaseg.data.intensity import brain_mask  # noqa: E402
from gliomaseg.data.sequences import FLAIR_CHANNEL  # noqa: E402

# The case study's scale range (ShiftScaleRotate scale_limit 0.04) and nnU-Net's (0.7-1.4).
CASE_STUDY_SCALE = (0.96, 1.04)


class MissingSequence(A.ImageOnlyTransform):
    """Replace pre-contrast, post-contrast or both with the FLAIR channel (uint8 (H, W, 3) in, same out).

    Each of the three choices is equally likely when the transform fires (probability ``p``).
    """

    CHOICES = ((0,), (2,), (0, 2))

    def __init__(self, p: float = 0.2) -> None:
        super().__init__(p=p)

    def get_params(self) -> dict[str, Any]:
        return {"channels": self.CHOICES[self.py_random.randrange(len(self.CHOICES))]}

    def apply(self, img: np.ndarray, channels: tuple[int, ...] = (), **params: Any) -> np.ndarray:
        out = img.copy()
        for channel in channels:
            out[..., channel] = img[..., FLAIR_CHANNEL]
        return out


class ChannelIntensity(A.ImageOnlyTransform):
    """Per channel, on brain pixels only (background, value 0 after standardization, stays as it is): a contrast
    factor around the channel's brain mean, a brightness factor and a gamma on the brain's value range, each
    drawn independently (nnU-Net's ranges: contrast 0.75-1.25, brightness 0.75-1.25, gamma 0.7-1.5).

    ``contrast`` reaches down to 0.5 by default: the failures this is for are scans whose FLAIR has little
    grey/white-matter contrast.
    """

    def __init__(self, contrast: tuple[float, float] = (0.5, 1.25), brightness: tuple[float, float] = (0.75, 1.25),
                 gamma: tuple[float, float] = (0.7, 1.5), p: float = 0.3) -> None:
        super().__init__(p=p)
        self.contrast, self.brightness, self.gamma = contrast, brightness, gamma

    def get_params(self) -> dict[str, Any]:
        uniform = self.py_random.uniform
        return {"factors": [(uniform(*self.contrast), uniform(*self.brightness), uniform(*self.gamma))
                            for _ in range(3)]}

    def apply(self, img: np.ndarray, factors: Sequence[tuple[float, float, float]] = (), **params: Any) -> np.ndarray:
        out = img.copy()
        brain = brain_mask(img)  # the one rule for brain pixels (gliomaseg.data.intensity)
        if not brain.any():
            return out
        for channel, (contrast, brightness, gamma) in enumerate(factors):
            values = img[..., channel][brain].astype(np.float32)
            low, high = float(values.min()), float(values.max())
            if high > low:  # gamma on the brain's own range, so it bends contrast without moving the ends
                values = low + (high - low) * ((values - low) / (high - low)) ** gamma
            values = (values - values.mean()) * contrast + values.mean()
            out[..., channel][brain] = np.clip(np.rint(values * brightness), 1, 255).astype(np.uint8)
        return out


def normalize_and_tensor(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> list:
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def train_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                     missing_sequence_p: float = 0.0, intensity_p: float = 0.0,
                     scale: tuple[float, float] = CASE_STUDY_SCALE) -> A.Compose:
    """Training pipeline: returns (image float tensor (3,H,W), mask tensor (H,W)).

    With the defaults it is the case study's. ``intensity_p`` and ``missing_sequence_p`` switch on
    :class:`ChannelIntensity` and :class:`MissingSequence`; ``scale`` is the Affine's zoom range.
    Intensity runs before the FLAIR copy, so a copied channel equals FLAIR exactly, as in the data.
    """
    optional = []
    if intensity_p > 0:
        optional.append(ChannelIntensity(p=intensity_p))
    if missing_sequence_p > 0:
        optional.append(MissingSequence(p=missing_sequence_p))
    return A.Compose(
        [
            *optional,
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Transpose(p=0.5),
            # The case study's ShiftScaleRotate(0.01, 0.04, 0) written as the Affine that replaces it.
            A.Affine(translate_percent=(-0.01, 0.01), scale=tuple(scale), rotate=0, p=0.25),
            *normalize_and_tensor(mean, std),
        ]
    )


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Validation / inference pipeline: normalization only."""
    return A.Compose(normalize_and_tensor(mean, std))
