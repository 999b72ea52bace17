"""The data loaders of a run: its training and validation CSVs, the tumour oversampler."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from gliomaseg.core.errors import DataError
from gliomaseg.data.dataset import SliceDataset
from gliomaseg.data.files import read_slices_csv
from gliomaseg.data.transforms import eval_transforms, train_transforms
from gliomaseg.modeling.models import encoder_normalization
from gliomaseg.training.config import TrainConfig


class IndexedSlices(Dataset):
    """A dataset's items with their index appended: ``(image, mask, index)``."""

    def __init__(self, data: SliceDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, mask = self.data[index]
        return image, mask, index


def tumour_sampler(frame: pd.DataFrame, oversample: float, seed: int) -> WeightedRandomSampler | None:
    """Draw slices with tumour ``oversample`` times as often as empty ones (None: plain shuffling).

    An epoch keeps its length (one draw per slice, with replacement).
    """
    if oversample == 1:
        return None
    if "diagnosis" not in frame:
        raise DataError("oversampling needs the CSV's diagnosis column (1 = the slice's mask has tumour); run prepare again")
    weights = torch.where(torch.as_tensor(frame["diagnosis"].to_numpy()) > 0, float(oversample), 1.0).double()
    return WeightedRandomSampler(weights, num_samples=len(frame), replacement=True, generator=torch.Generator().manual_seed(seed))


def build_loaders(config: TrainConfig) -> tuple[DataLoader, DataLoader | None, Path, Path | None]:
    """Training loader (augmented, optionally tumour-oversampled) and validation loader yielding
    ``(image, native-size mask, index)``; normalization is the one the encoder's weights expect.
    No validation loader (None) for ``--val-csv none``."""
    train_csv, val_csv = config.csv_paths()
    train_frame = read_slices_csv(train_csv)
    val_frame = read_slices_csv(val_csv) if val_csv is not None else None
    if val_frame is not None:
        shared = set(train_frame["image_path"]) & set(val_frame["image_path"])
        if shared:
            raise DataError(f"{val_csv}: {len(shared)} slice(s) are also in {train_csv}, e.g. {sorted(shared)[0]}")
    mean, std = encoder_normalization(config.encoder, config.encoder_weights)
    augmentation = train_transforms(mean, std, config.missing_sequence_p, config.intensity_augment_p,
                                    (config.scale_min, config.scale_max))
    train_set = SliceDataset(train_frame, augmentation if config.augment else eval_transforms(mean, std),
                             config.cache, config.image_size, intensity=config.intensity)
    val_set = None if val_frame is None else SliceDataset(val_frame, eval_transforms(mean, std), config.cache,
                                                           config.image_size, native_masks=True, intensity=config.intensity)
    if config.cache:
        train_set.preload()
        if val_set is not None:
            val_set.preload()
    common = {"num_workers": config.workers, "persistent_workers": config.workers > 0, "pin_memory": torch.cuda.is_available()}
    sampler = tumour_sampler(train_set.frame, config.oversample, config.seed)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=len(train_set) > config.batch_size, **common
    )
    val_loader = None if val_set is None else DataLoader(IndexedSlices(val_set), batch_size=config.batch_size, shuffle=False, **common)
    return train_loader, val_loader, train_csv, val_csv
