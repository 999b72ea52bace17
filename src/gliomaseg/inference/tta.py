"""Test-time augmentation over the dihedral group D4, in numpy so both backends share it."""

from __future__ import annotations

from typing import Callable

import numpy as np

from gliomaseg.core.defaults import TTA_MODES

# Each transform is (rotations k, transpose): forward on images (N, H, W, C), inverse on maps (N, H, W).
FLIPS = [("none", None), ("hflip", 2), ("vflip", 1)]
D4 = [(k, t) for t in (False, True) for k in range(4)]


def _d4_forward(images: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    out = np.rot90(images, k, axes=(1, 2))
    return out.transpose(0, 2, 1, 3) if transpose else out


def _d4_inverse(maps: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    out = maps.transpose(0, 2, 1) if transpose else maps
    return np.rot90(out, -k, axes=(1, 2))


def tta_probabilities(probabilities: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mode: str = "flip") -> np.ndarray:
    """Mean probability over transformed copies, each mapped back.

    Args:
        probabilities: maps uint8 images (N, S, S, 3) to probabilities (N, S, S).
        images: (N, S, S, 3) uint8.
        mode: ``none``; ``flip`` (identity, horizontal, vertical); ``d4`` (all 8 rotations/reflections).
    """
    if mode == "none":
        return probabilities(images)
    if mode == "flip":
        total = np.zeros(images.shape[:3], np.float32)
        for _, axis in FLIPS:
            batch = images if axis is None else np.flip(images, axis)
            out = probabilities(np.ascontiguousarray(batch))
            total += out if axis is None else np.flip(out, axis)
        return total / len(FLIPS)
    if mode == "d4":
        total = np.zeros(images.shape[:3], np.float32)
        for k, transpose in D4:
            out = probabilities(np.ascontiguousarray(_d4_forward(images, k, transpose)))
            total += _d4_inverse(out, k, transpose)
        return total / len(D4)
    raise ValueError(f"unknown TTA mode {mode!r}; valid: {', '.join(TTA_MODES)}")
