"""How slices go to the model's size and predictions come back: one convention for training,
validation, evaluation and inference. Torch-free (the ONNX path uses it too)."""

from __future__ import annotations

import cv2
import numpy as np


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int | None, resize_mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area) and, unless ``resize_mask`` is False, its mask (nearest) to ``size`` x ``size``."""
    if size is None or image.shape[:2] == (size, size):
        return image, mask
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if resize_mask:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (S, S) probability map resized (linear) to ``shape`` (H, W): how predictions return to a slice's size."""
    if probabilities.shape == tuple(shape):
        return probabilities
    return cv2.resize(probabilities, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
