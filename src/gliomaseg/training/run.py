"""Training with Lightning: one ``train(TrainConfig)`` call per run folder.

The run folder holds ``config.json``, ``best.ckpt`` (by validation mean per-patient 3D Dice at the masks'
native resolution, the number ``evaluate`` reports) or, with ``--val-csv none``, ``final.ckpt`` (the last epoch:
no validation, no pick), ``last.ckpt``,
TensorBoard and CSV logs, and ``summary.json``. ``resume=True`` continues from ``last.ckpt``.
Checkpoints hold only tensors and plain data, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from gliomaseg.core.defaults import PRECISIONS
from gliomaseg.core.errors import ConfigError, first_line
from gliomaseg.core.io import BEST_CHECKPOINT, FINAL_CHECKPOINT, LAST_CHECKPOINT, atomic_write, write_text
from gliomaseg.data.files import read_slices_csv
from gliomaseg.modeling.models import canonical_architecture, count_parameters, encoder_normalization, parse_decoder_channels
from gliomaseg.modeling.precision import choose_precision
from gliomaseg.modeling.spec import load_checkpoint_file
from gliomaseg.training.callbacks import LastCheckpoint, Throughput
from gliomaseg.training.config import MONITOR, TrainConfig
from gliomaseg.training.loaders import build_loaders
from gliomaseg.training.task import SegmentationTask


def _max_time(value: str | None) -> str | None:
    """HH:MM:SS (or DD:HH:MM:SS) for Lightning, which wants DD:HH:MM:SS."""
    if not value:
        return None
    parts = value.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--max-time must be HH:MM:SS or DD:HH:MM:SS, got {value!r}")
    return ":".join(["00"] * (4 - len(parts)) + parts)


def task_from_config(config: TrainConfig, train_csv: Path, val_csv: Path | None) -> SegmentationTask:
    from gliomaseg import __version__

    mean, std = encoder_normalization(config.encoder, config.encoder_weights)
    task = SegmentationTask(
        arch=canonical_architecture(config.model), encoder=config.encoder, loss=config.loss, optimizer=config.optimizer,
        lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, scheduler=config.scheduler,
        epochs=config.epochs, lowlr=config.lowlr, image_size=config.image_size, threshold=config.threshold,
        channels_last=config.channels_last, encoder_weights=config.encoder_weights, weights_dir=config.weights_dir,
        train_csv=str(train_csv.resolve()), val_csv=str(val_csv.resolve()) if val_csv else None, gliomaseg_version=__version__,
        mean=list(mean), std=list(std), intensity=config.intensity,
        decoder_channels=parse_decoder_channels(config.decoder_channels),
        distill_from=config.distill_from, distill_weight=config.distill_weight,
    )
    task.val_patients = list(read_slices_csv(val_csv)["patient"]) if val_csv else None
    return task


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path | None  # None for a run without validation
    last_checkpoint: Path
    summary: dict = field(default_factory=dict)

    @property
    def model_checkpoint(self) -> Path:
        """The run's model: best.ckpt (picked on validation) or final.ckpt (no validation, the last epoch)."""
        return self.best_checkpoint or self.out / FINAL_CHECKPOINT


# How a session runs on its machine, not what it trains: these may differ between the sessions of one run, and a
# resume does not take them from the run's config.json. Every other option is the run's recipe.
MACHINE_OPTIONS = frozenset({"out", "resume", "progress", "workers", "precision", "devices", "accelerator", "num_nodes",
                             "strategy", "cache", "channels_last", "weights_dir", "max_time", "limit_train_batches",
                             "limit_val_batches"})
# Where the data is may move between sessions; which CSVs train and validate may not (compared by file name).
_DATA_OPTIONS = frozenset({"data", "train_csv", "val_csv"})


def started_config(out: Path, note: bool = False) -> dict[str, Any] | None:
    """The options a run in ``out`` was started with (its ``config.json``), or ``None`` when there is none to read.

    Options this version does not know (a file from an older gliomaseg) are left out, so the rest still guards the
    resume; ``note``: say so (once a resume: the check in :func:`train` asks, the callers before it do not)."""
    saved = Path(out) / "config.json"
    if not saved.is_file():
        return None
    try:
        values = json.loads(saved.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict):
        return None
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown and note:
        print(f"{saved}: option(s) {', '.join(unknown)} of an older gliomaseg left out")
    return {k: v for k, v in values.items() if k in known}


def resume_options(out: Path, current: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The options to resume the run in ``out`` with: ``current`` (what this session would use), with every option of
    the run's recipe that is not in ``given`` (the options named on the command line, or by an experiment file)
    taken from its ``config.json``, as the run was started. :data:`MACHINE_OPTIONS` stay as ``current`` has them."""
    earlier = started_config(out)
    if earlier is None:
        return dict(current)
    return {**current, **{k: v for k, v in earlier.items() if k not in MACHINE_OPTIONS and k not in given}}


def _csv_name(path: str | None, default: str) -> str:
    return Path(path).name if path else default


def comparable(name: str, value: Any) -> Any:
    """One form for the spellings of a value that mean the same run ('unet' and 'Unet'; 'none' and None; widths)."""
    if name == "model" and isinstance(value, str):
        try:
            return canonical_architecture(value)
        except ConfigError:
            return value
    if name == "decoder_channels":
        try:
            return parse_decoder_channels(value)
        except ConfigError:
            return value
    if name in ("encoder_weights", "distill_from"):
        return None if value in (None, "", "none", "None") else Path(str(value)).name  # a file may move with its run
    return value


def recipe_differences(earlier: dict[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{option: (earlier, now)}`` for the recipe options (all but :data:`MACHINE_OPTIONS`) that differ in meaning.

    ``epochs`` is part of the recipe only under the cosine schedule: its curve spans the epochs the run started with
    (the resumed scheduler keeps that span, so more epochs would climb the learning rate back up)."""
    start = TrainConfig.from_dict({**earlier, "out": config.out})
    changed = {}
    for f in fields(TrainConfig):
        name = f.name
        if name in MACHINE_OPTIONS or name in _DATA_OPTIONS or (name == "epochs" and config.scheduler != "cosine"):
            continue
        before, now = getattr(start, name), getattr(config, name)
        if comparable(name, before) != comparable(name, now):
            changed[name] = (before, now)
    for name, default in (("train_csv", "data_train.csv"), ("val_csv", "data_val.csv")):
        before, now = _csv_name(getattr(start, name), default), _csv_name(getattr(config, name), default)
        if before != now:
            changed[name] = (before, now)
    return changed


def _check_same_run(out: Path, config: TrainConfig) -> None:
    """A resume continues the run it finds: the same model, data and recipe (only :data:`MACHINE_OPTIONS` may change),
    and the same model selection (a run with validation, best.ckpt, does not turn into one without, final.ckpt,
    half way: the two models would sit side by side)."""
    saved = Path(out) / "config.json"
    earlier = started_config(out, note=True)
    if earlier is None:  # config.json is written before the first epoch: a last.ckpt without one was tampered with
        problem = "is missing" if not saved.is_file() else "is not a readable JSON object of options"
        raise ConfigError(f"{saved}: {problem}, so what the run in {out} was started with cannot be checked; restore it "
                          "(a resume must not continue another recipe silently) or train into another --out")
    try:
        changed = recipe_differences(earlier, config)
        validated = TrainConfig.from_dict({**earlier, "out": config.out}).validates
    except (ValueError, TypeError, ConfigError) as exc:
        raise ConfigError(f"{saved}: its options cannot be read as a run's ({first_line(exc)}), so the resume cannot be "
                          "checked against them; restore the file or train into another --out") from None
    if validated != config.validates:
        was = "with validation (best.ckpt)" if validated else "without validation (--val-csv none, final.ckpt)"
        raise ConfigError(f"{saved}: the run was trained {was}; --resume it the same way or train into another --out")
    if changed:
        listed = "; ".join(f"{name} {before!r} then, {now!r} now" for name, (before, now) in changed.items())
        hint = (" (the cosine schedule spans the epochs the run started with: train a longer run into another --out)"
                if "epochs" in changed else "")
        raise ConfigError(f"{saved}: the run was started with other options ({listed}){hint}; --resume it with the "
                          "options it started with (leave them out: a resume takes them from config.json), or train "
                          "into another --out")


DATA_RECORD = "data.json"
DATA_IDENTITY = ("csv", "slices", "digest")  # the fields of a data record that must match on a resume


def check_teacher(config: TrainConfig, val_csv: Path | None) -> dict[str, Any]:
    """The ``--distill-from`` checkpoint checked before anything trains (one :class:`ConfigError` naming it): it
    exists, loads, reads slices as this run's model will (:func:`~gliomaseg.training.task.check_teacher_reads_alike`), is
    not a run still in progress (a ``last.ckpt`` short of its epochs), and did not train on this run's validation
    patients (when its training CSV is on this machine), since through it they would reach the model. Returns the
    teacher's record for ``data.json``: its file name and a digest of its weights, which a resume must match."""
    import hashlib

    from gliomaseg.modeling.spec import model_state
    from gliomaseg.training.task import check_teacher_reads_alike

    path = Path(config.distill_from)
    if not path.is_file():
        raise ConfigError(f"{path}: --distill-from checkpoint does not exist")
    checkpoint, info = load_checkpoint_file(path)
    mean, std = encoder_normalization(config.encoder, config.encoder_weights)
    check_teacher_reads_alike(path, info, {"image_size": config.image_size, "intensity": config.intensity,
                                           "mean": list(mean), "std": list(std)})
    epochs, epoch = checkpoint["hyper_parameters"].get("epochs"), checkpoint.get("epoch")
    if path.name == LAST_CHECKPOINT and isinstance(epochs, int) and isinstance(epoch, int) and epoch + 1 < epochs:
        raise ConfigError(f"{path}: a run still in progress (epoch {epoch + 1} of {epochs}); distill from a finished "
                          "run's model")
    taught = Path(info.train_csv) if info.train_csv else None
    if val_csv is not None and taught is not None and taught.is_file():
        seen = set(read_slices_csv(taught, require_mask=False, check_paths=False)["patient"])
        held_out = set(read_slices_csv(val_csv, require_mask=False, check_paths=False)["patient"])
        if seen & held_out:
            raise ConfigError(f"{path}: the teacher trained on {len(seen & held_out)} of this run's validation patients "
                              f"(e.g. {sorted(seen & held_out)[0]}, in {taught.name}); through it they would reach the "
                              "model that is scored on them; use a teacher of the same fold")
    digest = hashlib.sha256()
    for name, tensor in sorted(model_state(checkpoint, path).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return {"file": path.name, "weights_digest": digest.hexdigest()[:20]}


def data_record(train_csv: Path, val_csv: Path | None) -> dict[str, Any]:
    """What a run trains and validates on, in a form two sessions can compare: per CSV, its patients and slices and a
    digest of its (patient, slice file name) pairs. Where the data lies may move between sessions; which slices are
    in each set may not (a resume on another split would pick its best epoch on patients it may have trained on)."""
    import hashlib

    record: dict[str, Any] = {}
    for role, csv in (("train", train_csv), ("val", val_csv)):
        if csv is None:
            record[role] = None
            continue
        frame = read_slices_csv(csv, require_mask=False, check_paths=False)
        pairs = sorted(f"{patient}/{Path(str(image)).name}" for patient, image in zip(frame["patient"], frame["image_path"]))
        record[role] = {"csv": Path(csv).name, "patients": int(frame["patient"].nunique()), "slices": len(pairs),
                        "digest": hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:20]}
    return record


def _check_same_data(out: Path, record: dict[str, Any]) -> None:
    """A resumed run's CSVs hold the slices it started with (:func:`data_record`); a run from before the record was
    kept has none to compare (it gets one now)."""
    saved = Path(out) / DATA_RECORD
    if not saved.is_file():
        return
    try:
        earlier = json.loads(saved.read_text())
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict):
        raise ConfigError(f"{saved}: not a readable JSON object, so the resume's data cannot be checked against the "
                          "run's; restore it or train into another --out")

    def same(before: Any, now: Any) -> bool:  # what says which slices: a later version may record more beside it
        if before is None or now is None:
            return before is now
        return isinstance(before, dict) and all(before.get(k) == now[k] for k in DATA_IDENTITY)

    changed = [role for role in ("train", "val") if not same(earlier.get(role), record[role])]
    before, now = earlier.get("teacher"), record.get("teacher")
    if (before or {}).get("weights_digest") != (now or {}).get("weights_digest"):
        def who(entry: Any) -> str:
            return "none" if not isinstance(entry, dict) else f"{entry.get('file')} (weights {entry.get('weights_digest')})"

        raise ConfigError(f"{saved}: the run was started with another --distill-from teacher ({who(before)} then, "
                          f"{who(now)} now); --resume it with its own teacher, or train into another --out")
    if changed:
        def describe(entry: Any) -> str:
            if not isinstance(entry, dict):
                return "none"
            return f"{entry.get('csv')}: {entry.get('patients')} patients, {entry.get('slices')} slices, digest {entry.get('digest')}"

        listed = "; ".join(f"{role} {describe(earlier.get(role))} then, {describe(record[role])} now" for role in changed)
        raise ConfigError(f"{saved}: the run was started on other slices ({listed}); --resume it on the data it started "
                          "with, or train into another --out")


def _drop_stale_final(final: Path, epochs: int) -> None:
    """A resumed run that trains on past an earlier final.ckpt (a larger --epochs) makes that file stale: removed,
    and written again once the new epochs are done. A final.ckpt of exactly these epochs is kept (its card may
    carry a cross-validation headline)."""
    if final.is_file():
        checkpoint, _ = load_checkpoint_file(final)
        if int(checkpoint.get("epoch", -1)) + 1 != epochs:
            final.unlink()


def write_final_checkpoint(last: Path, final: Path) -> None:
    """``final.ckpt``: the model of ``last.ckpt`` without the optimizer and loop state (a resume needs those,
    a user of the model does not); loaded and written as plain data, like every checkpoint here."""
    checkpoint, _ = load_checkpoint_file(last)
    keep = {k: checkpoint[k] for k in ("state_dict", "hyper_parameters", "epoch", "global_step", "pytorch-lightning_version")
            if k in checkpoint}
    atomic_write(final, lambda tmp: torch.save(keep, tmp))


def train(config: TrainConfig) -> TrainResult:
    """Train one run into ``config.out``; resume from ``last.ckpt`` when ``config.resume``."""
    config.validate()
    out = Path(config.out)
    last = out / LAST_CHECKPOINT
    resume_from = last if config.resume and last.is_file() else None
    if not config.resume and last.exists():
        raise ConfigError(f"{out}: holds a run already (last.ckpt); pass --resume to continue it or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    if resume_from is None:
        # A session killed after its first best.ckpt but before any last.ckpt starts again from scratch: its
        # best.ckpt would outlive the new run (and be scored) when the new run's first epochs score lower.
        (out / BEST_CHECKPOINT).unlink(missing_ok=True)
        (out / FINAL_CHECKPOINT).unlink(missing_ok=True)
    train_csv, val_csv = config.csv_paths()
    record = data_record(train_csv, val_csv)
    if config.distill_from:  # here, not in validate(): an experiment file naming a teacher loads on any machine
        record["teacher"] = check_teacher(config, val_csv)
    if resume_from is not None:  # both checks before anything of the run is changed (final.ckpt) or loaded
        _check_same_run(out, config)
        _check_same_data(out, record)
        _drop_stale_final(out / FINAL_CHECKPOINT, config.epochs)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_loader, val_loader, train_csv, val_csv = build_loaders(config)
    write_text(json.dumps(record, indent=2), out / DATA_RECORD)
    precision = choose_precision(config.precision, config.model, config.encoder, config.image_size,
                                 batch_size=config.batch_size, accelerator=config.accelerator,
                                 decoder_channels=parse_decoder_channels(config.decoder_channels))
    print(precision.message(), flush=True)
    write_text(json.dumps(asdict(config), indent=2), out / "config.json")
    task = task_from_config(config, train_csv, val_csv)
    throughput = Throughput()
    # No version counter: Lightning would write best-v1.ckpt beside a best.ckpt it does not track, and every
    # reader of the run takes best.ckpt.
    checkpoint = ModelCheckpoint(dirpath=out, filename=Path(BEST_CHECKPOINT).stem, monitor=MONITOR, mode="max", save_last=False, save_top_k=1,
                                 enable_version_counter=False) if config.validates else None
    callbacks = [c for c in (checkpoint, LastCheckpoint(last), LearningRateMonitor("epoch"), throughput) if c is not None]
    max_time = _max_time(config.max_time)
    if max_time and not config.validates:
        # A final model's epochs must be whole: Lightning's max_time stops mid-epoch and counts the epoch as done,
        # so a resume would skip the rest of it. Checked at the end of each epoch instead.
        callbacks.append(Timer(duration=max_time, interval="epoch"))
        max_time = None
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=config.epochs,
        max_time=max_time,
        accelerator=config.accelerator,
        devices=config.devices if config.devices == "auto" else int(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=PRECISIONS[precision.precision],
        # A new log version per session: Lightning's loggers would delete the interrupted session's logs.
        logger=[TensorBoardLogger(out, name="tensorboard"), CSVLogger(out, name="logs")],
        callbacks=callbacks,
        # Without validation there is no ModelCheckpoint, and Lightning would add its own (a full checkpoint per epoch).
        enable_checkpointing=config.validates,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, len(train_loader))),
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        # --val-csv none: Lightning's note that validation_step goes unused says what the user asked for.
        warnings.filterwarnings("ignore", message=".*validation_step.*no `val_dataloader`")
        trainer.fit(task, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
    seconds = time.perf_counter() - started
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    # Every epoch whole: Lightning counts an epoch that max_time cut short as done, its steps tell.
    per_epoch = trainer.num_training_batches
    finished = trainer.current_epoch >= config.epochs and (
        not math.isfinite(per_epoch) or trainer.global_step >= config.epochs * int(per_epoch))
    model_path = out / BEST_CHECKPOINT if config.validates else out / FINAL_CHECKPOINT
    if not config.validates and finished and not model_path.is_file() and trainer.is_global_zero:
        write_final_checkpoint(last, model_path)  # an earlier session's final.ckpt of these epochs is kept with its card
    trainer.strategy.barrier()  # every rank sees final.ckpt before it reports it
    summary = {
        "model": canonical_architecture(config.model),
        "encoder": config.encoder,
        "loss": config.loss,
        "image_size": config.image_size,
        "precision": precision.precision,
        "precision_choice": asdict(precision),
        "epochs_completed": int(trainer.current_epoch),
        "resumed_from": str(resume_from) if resume_from else None,
        "stopped_by": "epochs" if finished else "max_time",
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
        "best_checkpoint": str(out / BEST_CHECKPOINT) if config.validates else None,
        "model_checkpoint": str(model_path) if model_path.is_file() else None,
        "train_csv": str(train_csv),
        "model_selection_csv": str(val_csv) if val_csv else None,
        "note": ("best.ckpt is picked on model_selection_csv: its scores are validation scores, not a held-out test"
                 if config.validates else
                 f"no validation and no pick: {FINAL_CHECKPOINT} is the last of a fixed number of epochs; how well it does "
                 "on new patients is what a cross-validation of the same recipe measured"),
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
    if trainer.is_global_zero:
        write_text(json.dumps(summary, indent=2), previous)
    if model_path.is_file() and trainer.is_global_zero:
        from gliomaseg.modeling.card import write_run_card

        write_run_card(out, model_path.name)
    return TrainResult(out=out, best_checkpoint=out / BEST_CHECKPOINT if config.validates else None, last_checkpoint=last,
                       summary=summary)
