"""Augmentations (albumentations) and normalization.

The case study's training augmentations: flips, RandomRotate90, Transpose, a small
shift-scale-rotate, ImageNet normalization. Geometry runs on uint8 image and mask together.
"""

from __future__ import annotations

import os
from typing import Sequence

# albumentations asks PyPI for a newer version when first imported (up to 2 s on a machine without a network);
# gliomaseg makes no network calls, so that check is off unless the user turned it on explicitly.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_and_tensor(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> list:
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def train_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Training pipeline: returns (image float tensor (3,H,W), mask tensor (H,W))."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Transpose(p=0.5),
            # The case study's ShiftScaleRotate(0.01, 0.04, 0) written as the Affine that replaces it.
            A.Affine(translate_percent=(-0.01, 0.01), scale=(0.96, 1.04), rotate=0, p=0.25),
            *normalize_and_tensor(mean, std),
        ]
    )


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Validation / inference pipeline: normalization only."""
    return A.Compose(normalize_and_tensor(mean, std))
