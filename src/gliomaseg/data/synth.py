"""A synthetic MRI-like dataset in the kaggle_3m layout, so the demo and tests run anywhere.

Each patient is a stack of axial slices through an ellipsoid "head": a bright skull rim, a brain
whose three channels have different contrast (pre-contrast, FLAIR, post-contrast, as in
kaggle_3m), smooth texture and noise. Some patients carry a tumour: an irregular blob that is
bright on FLAIR, enhanced on the rim in post-contrast, and that grows and shrinks over a run of
contiguous slices away from the first and last slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from gliomaseg.core.defaults import SYNTH_PATIENTS, SYNTH_SIZE, SYNTH_SLICES
from gliomaseg.core.errors import DataError
from gliomaseg.data.formats.slice_files import SLICES

INSTITUTIONS = ("CS", "DU", "EZ", "FG", "HT")


@dataclass(frozen=True)
class SynthSummary:
    patients: int
    slices: int
    tumour_slices: int
    out: Path


def patient_name(rng: np.random.Generator) -> str:
    """A name shaped like the real ones, e.g. ``TCGA_CS_4941_19960909``."""
    site = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
    year = int(rng.integers(1990, 2003))
    return f"TCGA_{site}_{int(rng.integers(4000, 9000)):04d}_{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    noise = rng.standard_normal((size, size)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _slice_arrays(
    rng: np.random.Generator, size: int, depth: float, tumour: dict | None, texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One slice at relative depth ``depth`` in [0, 1]; returns (image HxWx3 uint8, mask HxW uint8 0/255)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    # The head's cross-section is largest mid-volume and shrinks towards both ends.
    scale = 0.35 + 0.65 * np.sin(np.pi * (0.08 + 0.84 * depth))
    ry, rx = 0.42 * size * scale, 0.34 * size * scale
    r = np.sqrt(((yy - c) / ry) ** 2 + ((xx - c) / rx) ** 2)
    head = r < 1.0
    brain = r < 0.88
    image = np.zeros((size, size, 3), np.float32)
    # Channel contrasts: pre-contrast, FLAIR, post-contrast.
    base = np.array([95.0, 80.0, 90.0], np.float32)
    for ch in range(3):
        layer = base[ch] + 18.0 * texture * (0.6 + 0.4 * ch / 2.0)
        # Ventricles: dark on FLAIR and pre-contrast near the centre.
        ventricles = (((yy - c) / (0.22 * ry + 1)) ** 2 + ((xx - c) / (0.1 * rx + 1)) ** 2) < 1.0
        layer = np.where(ventricles, layer * (0.55 if ch != 2 else 0.8), layer)
        image[:, :, ch] = np.where(brain, layer, 0.0)
    rim = head & ~brain
    image[rim] = np.array([150.0, 60.0, 120.0], np.float32)
    mask = np.zeros((size, size), np.uint8)
    if tumour is not None and tumour["start"] <= depth <= tumour["stop"]:
        t = (depth - tumour["start"]) / max(tumour["stop"] - tumour["start"], 1e-6)
        radius = tumour["radius"] * np.sin(np.pi * t) ** 0.7
        if radius > 1.5:
            dist = np.sqrt((yy - tumour["cy"]) ** 2 + (xx - tumour["cx"]) ** 2)
            blob = dist + 0.35 * radius * tumour["shape"] < radius
            blob &= brain
            if blob.any():
                mask[blob] = 255
                edge = blob & ~cv2.erode(blob.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                image[blob, 0] *= 0.85
                image[blob, 1] = 170.0 + 20.0 * texture[blob]
                image[blob, 2] *= 1.05
                image[edge, 2] = 185.0
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    image = np.where(head[:, :, None], image, rng.normal(3.0, 1.5, image.shape).astype(np.float32))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _random_tumour(prng: np.random.Generator, size: int) -> dict:
    start = float(prng.uniform(0.2, 0.4))
    return {
        "start": start,
        "stop": float(min(0.85, start + prng.uniform(0.3, 0.5))),
        "cy": float(size / 2 + prng.uniform(-0.15, 0.15) * size),
        "cx": float(size / 2 + prng.uniform(-0.12, 0.12) * size),
        "radius": float(prng.uniform(0.08, 0.16) * size),
        "shape": np.clip(_smooth_noise(prng, size, size / 16), -1.5, 1.5),
    }


def sample_slices(count: int, size: int, seed: int = 0) -> np.ndarray:
    """``count`` MRI-like slices through one synthetic patient with a tumour: uint8 RGB (count, size, size, 3)."""
    prng = np.random.default_rng(seed)
    tumour = _random_tumour(prng, size)
    texture = np.clip(_smooth_noise(prng, size, 3.0), -2.5, 2.5)
    return np.stack([_slice_arrays(prng, size, (k + 0.5) / count, tumour, texture)[0] for k in range(count)])


def generate(
    out: str | Path, patients: int = SYNTH_PATIENTS, slices: int = SYNTH_SLICES, seed: int = 0, size: int = SYNTH_SIZE, tumour_fraction: float = 0.7
) -> SynthSummary:
    """Write ``patients`` synthetic patients of about ``slices`` slices each under ``out``.

    Deterministic for a seed. The layout is kaggle_3m's: ``out/<patient>/<patient>_<k>.tif`` and
    ``out/<patient>/<patient>_<k>_mask.tif``, k from 1.
    """
    if patients < 1 or slices < 1:
        raise DataError(f"{out}: need at least one patient and one slice (got {patients} patients, {slices} slices)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names: set[str] = set()
    total = tumour_total = 0
    for index in range(patients):
        name = patient_name(rng)
        while name in names:
            name = patient_name(rng)
        names.add(name)
        prng = np.random.default_rng([seed, index])
        n = max(1, slices + int(prng.integers(-slices // 5, slices // 5 + 1)))
        tumour = None
        # The first patient always has a tumour so that even a tiny set has positives.
        if index == 0 or prng.random() < tumour_fraction:
            tumour = _random_tumour(prng, size)
        folder = out / name
        folder.mkdir(exist_ok=True)
        texture = np.clip(_smooth_noise(prng, size, 3.0), -2.5, 2.5)
        for k in range(1, n + 1):
            depth = (k - 0.5) / n
            image, mask = _slice_arrays(prng, size, depth, tumour, texture)
            tifffile.imwrite(folder / f"{name}_{k}.tif", image, photometric="rgb", compression="zlib")
            tifffile.imwrite(folder / SLICES.mask_name(f"{name}_{k}", ".tif"), mask, photometric="minisblack", compression="zlib")
            total += 1
            tumour_total += int(mask.any())
    return SynthSummary(patients=patients, slices=total, tumour_slices=tumour_total, out=out)
