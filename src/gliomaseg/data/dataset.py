"""A Dataset driven by the CSVs of ``prepare``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from gliomaseg.data.files import read_slice_pair, read_slices_csv
from gliomaseg.data.intensity import DEFAULT_INTENSITY, PatientStatistics, check_intensity, standardize
from gliomaseg.data.resize import resize_pair
from gliomaseg.data.transforms import eval_transforms


class SliceDataset(Dataset):
    """Slices listed in a CSV (``patient, image_path, mask_path``; more columns are kept).

    Item ``i`` is ``(image, mask)``: image float32 (3, H, W) in RGB order, normalized by the
    transform (ImageNet by default); mask float32 (1, H, W) of 0/1.

    Args:
        csv_path: a CSV from ``prepare`` or a DataFrame with the same columns.
        transform: an albumentations pipeline taking ``image`` (H,W,3 uint8) and ``mask`` (H,W uint8)
            and ending in ``ToTensorV2``; default :func:`eval_transforms`.
        cache: keep decoded (and resized) uint8 slices in memory so later epochs decode no file.
        image_size: resize slices to this square size when they are read (before caching).
        native_masks: resize only the images and keep masks at their own size, so that validation
            scores predictions at the resolution the masks were drawn at (as ``evaluate`` does).
        intensity: ``fixed`` (images as read) or ``patient`` (each slice standardized with its patient's
            statistics over all of the patient's slices in the CSV; see :mod:`gliomaseg.data.intensity`).
    """

    def __init__(
        self,
        csv_path: str | Path | pd.DataFrame,
        transform: Callable | None = None,
        cache: bool = False,
        image_size: int | None = None,
        native_masks: bool = False,
        intensity: str = DEFAULT_INTENSITY,
    ) -> None:
        if isinstance(csv_path, pd.DataFrame):
            self.frame = csv_path.reset_index(drop=True)
            self.source = "<DataFrame>"
        else:
            self.frame = read_slices_csv(csv_path)
            self.source = str(csv_path)
        self.transform = transform if transform is not None else eval_transforms()
        self.cache = cache
        self.image_size = image_size
        self.native_masks = native_masks
        self.intensity = check_intensity(intensity)
        self._store: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._statistics = PatientStatistics(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw slice: image (H, W, 3) uint8 RGB and mask (H, W) uint8 0/1, resized if asked."""
        if index in self._store:
            return self._store[index]
        row = self.frame.iloc[index]
        image, mask = read_slice_pair(row["image_path"], row["mask_path"], expected_size=None)
        return self._finish(index, row["patient"], image, mask)

    def _finish(self, index: int, patient: str, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A slice as read, made ready: standardized (``patient`` mode), resized, and kept when caching."""
        if self.intensity == "patient":
            image = standardize(image, *self.patient_statistics(patient))
        image, mask = resize_pair(image, mask, self.image_size, resize_mask=not self.native_masks)
        if self.cache:
            self._store[index] = (image, mask)
        return image, mask

    def patient_statistics(self, patient: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std per channel over the brain pixels of all of ``patient``'s slices (read once, then kept)."""
        return self._statistics(patient)

    def preload(self) -> "SliceDataset":
        """Decode every slice now (in the main process, so DataLoader workers share the cache).

        In ``patient`` mode a patient's slices are read once, for its statistics and for the cache alike."""
        if not self.cache:
            return self
        if self.intensity != "patient":
            for index in range(len(self)):
                self.load(index)
            return self
        patients = self.frame["patient"].to_numpy()
        for patient in pd.unique(patients):
            indices = [int(i) for i in np.flatnonzero(patients == patient)]
            todo = [i for i in indices if i not in self._store]
            if not todo:
                continue
            # A cached slice had its patient's statistics computed on the way in, so unknown statistics mean
            # nothing of this patient is cached yet: the slices read here are all of them.
            rows = self.frame.iloc[todo]
            pairs = [read_slice_pair(image, mask, expected_size=None) for image, mask in zip(rows["image_path"], rows["mask_path"])]
            if patient not in self._statistics:
                self._statistics.from_images(patient, [image for image, _ in pairs])
            for index, (image, mask) in zip(todo, pairs):
                self._finish(index, patient, image, mask)
        return self

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(index)
        if self.native_masks and image.shape[:2] != mask.shape:
            # Geometry-free transform (validation): the image alone, the mask as it is.
            out = {**self.transform(image=image), "mask": mask}
        else:
            out = self.transform(image=image, mask=mask)
        mask_t = torch.as_tensor(out["mask"]).float()
        if mask_t.ndim == 2:
            mask_t = mask_t.unsqueeze(0)
        return out["image"].float(), mask_t
