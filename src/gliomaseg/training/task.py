"""The LightningModule: the smp model, its loss and optimizer, and validation by mean per-patient 3D Dice."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from gliomaseg.core.defaults import IMAGENET_MEAN, IMAGENET_STD
from gliomaseg.core.errors import ConfigError, TrainingDivergedError
from gliomaseg.data.resize import resize_probabilities
from gliomaseg.evaluation.metrics import confusion
from gliomaseg.evaluation.scorer import PatientScorer
from gliomaseg.modeling.losses import build_loss
from gliomaseg.modeling.models import build_model, canonical_architecture
from gliomaseg.training.config import MONITOR, train_default

# What validation logs, each as (metric, reduction) of the scorer (gliomaseg.evaluation.scorer.SCORE_REDUCTIONS):
# the numbers evaluate reports under the names patient_dice_mean, patient_dice_median, iou_imagewise, ...
VALIDATION_SCORES = {
    MONITOR: ("dice", "patient-mean"),
    "val_patient_dice_median": ("dice", "patient-median"),
    "val_iou_imagewise": ("iou", "imagewise"),
    "val_dice_imagewise": ("dice", "imagewise"),
    "val_iou_tumour_slices": ("iou", "imagewise-tumour-slices"),
    "val_iou_micro": ("iou", "micro"),
    "val_dice_micro": ("dice", "micro"),
}


def validation_scores(counts) -> dict[str, float]:
    """The validation numbers of :data:`VALIDATION_SCORES` from ``(patient, tp, fp, fn, tn)`` rows, one a slice.

    Scored by :class:`~gliomaseg.evaluation.scorer.PatientScorer` as ``evaluate`` scores: a patient's slices as one
    volume, and an empty truth predicted empty is a perfect score (also for the micro scores of an all-empty set).
    """
    return PatientScorer().extend(counts).aggregate_all(VALIDATION_SCORES)


class SegmentationTask(L.LightningModule):
    """An smp model, its loss and the validation metrics. Hyperparameters are plain data only.

    The training defaults are :class:`~gliomaseg.training.config.TrainConfig`'s (``train`` passes every value;
    the defaults serve a task built by hand); mean and std default to ImageNet's, as for an encoder trained from scratch.
    """

    def __init__(
        self,
        arch: str = canonical_architecture(train_default("model")),
        encoder: str = train_default("encoder"),
        in_channels: int = 3,
        classes: int = 1,
        loss: str = train_default("loss"),
        optimizer: str = train_default("optimizer"),
        lr: float = train_default("lr"),
        momentum: float = train_default("momentum"),
        weight_decay: float = train_default("weight_decay"),
        scheduler: str = train_default("scheduler"),
        epochs: int = train_default("epochs"),
        lowlr: bool = train_default("lowlr"),
        image_size: int = train_default("image_size"),
        mean: list[float] = list(IMAGENET_MEAN),
        std: list[float] = list(IMAGENET_STD),
        threshold: float = train_default("threshold"),
        intensity: str = train_default("intensity"),
        channels_last: bool = train_default("channels_last"),
        encoder_weights: str | None = train_default("encoder_weights"),
        weights_dir: str | None = train_default("weights_dir"),
        train_csv: str | None = None,
        val_csv: str | None = None,
        gliomaseg_version: str = "",
        decoder_channels: list[int] | None = None,
        distill_from: str | None = None,
        distill_weight: float = train_default("distill_weight"),
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
        # The teacher (distill_from) is loaded when training starts, kept out of the module tree so that it is
        # neither trained nor saved in this model's checkpoints; a checkpoint loaded to predict never loads it.
        self._teacher: list[torch.nn.Module] = []

    def _laid_out(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the memory layout this model (and its teacher) run in."""
        return images.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._laid_out(images))

    def on_fit_start(self) -> None:
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.hparams.get("distill_from") and not self._teacher:
            self._teacher.append(load_teacher(self.hparams.distill_from, self.hparams, self.device))

    def on_fit_end(self) -> None:
        self._teacher.clear()  # its memory (a GPU's too) is not kept after training

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        logits = self(images)
        loss = self.loss_fn(logits, masks)
        if self._teacher:
            with torch.no_grad():
                teacher = torch.sigmoid(self._teacher[0](self._laid_out(images)).float())
            distill = F.binary_cross_entropy_with_logits(logits.float(), teacher)
            self.log("train_distill_loss", distill, on_step=False, on_epoch=True, batch_size=len(images))
            loss = loss + self.hparams.distill_weight * distill
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
        self.log_dict(validation_scores(zip(patients, stats[:, 1], stats[:, 2], stats[:, 3], stats[:, 4])),
                      prog_bar=True, sync_dist=False)

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


def teacher_differences(info: Any, student: Mapping[str, Any]) -> list[str]:
    """How the teacher described by ``info`` (a :class:`~gliomaseg.modeling.spec.ModelInfo`) reads slices otherwise
    than a model of hyperparameters ``student``: ``["image size 128 (teacher) against 64", ...]``, empty when alike.
    Both see the same batch, so size, intensity mode and normalization must agree."""
    differing = []
    for name, mine, its in (("image size", student.get("image_size"), info.image_size),
                            ("intensity", student.get("intensity"), info.intensity),
                            ("mean", list(student.get("mean", [])), list(info.mean)),
                            ("std", list(student.get("std", [])), list(info.std))):
        if mine != its if not isinstance(mine, list) else any(abs(a - b) > 1e-6 for a, b in zip(mine, its)):
            differing.append(f"{name} {its} (teacher) against {mine}")
    return differing


def check_teacher_reads_alike(path: str | Path, info: Any, student: Mapping[str, Any]) -> None:
    """One :class:`ConfigError` naming the teacher ``path`` when :func:`teacher_differences` finds any."""
    differing = teacher_differences(info, student)
    if differing:
        raise ConfigError(f"{path}: the teacher reads slices another way than this model ({'; '.join(differing)}); "
                          "distill from a teacher trained at the same size, intensity mode and normalization")


def load_teacher(path: str | Path, student: Mapping[str, Any], device: torch.device | str = "cpu") -> torch.nn.Module:
    """The teacher model of ``path`` in eval mode, frozen, on ``device``; refused when it reads slices another way
    than the ``student``'s hyperparameters say (:func:`check_teacher_reads_alike`: a task fitted without ``train``'s
    own check gets it here)."""
    from gliomaseg.inference.torch_backend import load_checkpoint

    teacher = load_checkpoint(path, channels_last=bool(student.get("channels_last", True)))
    check_teacher_reads_alike(path, teacher.info, student)
    model = teacher.model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
