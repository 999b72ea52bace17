"""Callbacks of a training run: training throughput that survives a resume, and an atomic ``last.ckpt`` every epoch."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


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
        # Not core.io.atomic_write: every rank calls save_checkpoint and only rank 0 may rename, so the temporary
        # name must be the same on every rank and only rank 0 touches the file.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, to resume; every rank takes part, rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier()
