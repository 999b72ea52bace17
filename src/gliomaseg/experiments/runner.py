"""Running an experiment: each run trained and scored in its own folder, resumable, skipped when done."""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from gliomaseg.core.errors import ConfigError, DataError
from gliomaseg.core.io import BEST_CHECKPOINT, LAST_CHECKPOINT, write_csv, write_text
from gliomaseg.experiments.spec import FOLD_SPLIT, RunSpec, experiment_presets, load_experiment
from gliomaseg.experiments.summary import _has_scores, write_results
from gliomaseg.training.config import TrainConfig, train_default


def split_csvs(data: Path, split: str) -> tuple[Path, Path]:
    """The CSVs of a split, making the image split from ``data_info.csv`` when it is missing."""
    if split == "patient":
        return data / "data_train.csv", data / "data_val.csv"
    fold = FOLD_SPLIT.fullmatch(split)
    if fold:
        from gliomaseg.data.prepare import FOLD_CSV

        train, val = (data / FOLD_CSV.format(fold=int(fold[1]), part=part) for part in ("train", "val"))
        if not (train.is_file() and val.is_file()):
            raise DataError(f"{data}: no {train.name} / {val.name}; run `gliomaseg prepare --folds K` with K >= {max(2, int(fold[1]) + 1)} "
                            "into this folder first")
        return train, val
    train, val = data / "data_train_split_by_img.csv", data / "data_val_split_by_img.csv"
    if not (train.is_file() and val.is_file()):
        from gliomaseg.data.files import read_slices_csv
        from gliomaseg.data.prepare import split_by_image

        info = read_slices_csv(data / "data_info.csv")
        image_train, image_val = split_by_image(info)
        write_csv(image_train, train)
        write_csv(image_val, val)
    return train, val


def _portable_path(path: Path | str | None) -> str | None:
    """A shipped experiment file as ``gliomaseg/configs/experiments/NAME.yaml``; any other as the user gave it."""
    if path is None:
        return None
    package = Path(__file__).resolve().parent
    resolved = Path(path).resolve()
    return resolved.relative_to(package.parent).as_posix() if resolved.is_relative_to(package) else str(path)


def _status(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _set_status(run_dir: Path, **values) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps({**_status(run_dir), **values}, indent=2), run_dir / "status.json")


# The architecture a preset's decoder widths were measured on (crossval_light.md: Unet); others keep smp's decoder.
PRESET_DECODER_ARCHITECTURE = "Unet"


def _preset_for(spec: RunSpec, preset_options: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's options that ``spec`` does not set itself; a preset's decoder widths go only to the architecture
    they were measured on (Unet), so one preset serves every architecture. ``overrides`` (command line, extra
    options) may name the model too."""
    from gliomaseg.modeling.models import canonical_architecture

    overrides = overrides or {}
    options = {k: v for k, v in preset_options.items() if k not in spec.options}
    model = overrides.get("model", spec.options.get("model", options.get("model", train_default("model"))))
    if options.get("decoder_channels") is not None and canonical_architecture(model) != PRESET_DECODER_ARCHITECTURE:
        del options["decoder_channels"]
    return options


def _as_started(spec: RunSpec, run_dir: Path, options: dict[str, Any], preset_keys: Iterable[str], announce: bool) -> dict[str, Any]:
    """``options`` for resuming the run in ``run_dir``: every recipe option that neither the experiment file nor the
    command line sets comes from the run's ``config.json``, as the run was started
    (:func:`~gliomaseg.training.run.resume_options`). A preset that changed since (a recipe adopted while a run was
    half way) would otherwise mix two recipes in one run, or fail on weights of another shape. A change in the file
    or on the command line is refused by ``train``, with the options named. ``announce``: say which option kept its
    start value against what this session would have used (not when only the scoring is left)."""
    from gliomaseg.training.run import comparable, resume_options

    given = set(spec.options) | (set(options) - set(preset_keys)) | {"out", "data", "train_csv", "val_csv", "resume", "progress"}
    resumed = resume_options(run_dir, options, given)
    if announce:
        now = TrainConfig.from_dict({**spec.options, **options, "out": str(run_dir)})
        for name, then in resumed.items():
            if name not in given and hasattr(now, name) and comparable(name, then) != comparable(name, getattr(now, name)):
                print(f"[{spec.name}] resumed with {name}={then!r} as it started (this session would have used "
                      f"{getattr(now, name)!r})")
    return resumed


def run_one(spec: RunSpec, data: Path, run_dir: Path, overrides: dict[str, Any], score_last: bool = False,
            score_variants: bool = False, preset_keys: Iterable[str] = ()) -> dict:
    """Train (or resume) and evaluate one run; returns its results row.

    ``best.ckpt`` is scored into ``eval/``; with ``score_last`` also ``last.ckpt`` into ``eval_last/``: the
    last epoch involves no pick on the validation CSV, so the gap between the two shows how lucky the pick was.
    ``score_variants`` adds evaluate's TTA and post-processing table (``variant_*`` columns: per-patient Dice mean).
    ``preset_keys``: the options of ``overrides`` that came from the preset; a resumed run keeps the values it started
    with (:func:`_as_started`).
    """
    from gliomaseg.evaluation.evaluate import evaluate
    from gliomaseg.modeling.card import write_run_card
    from gliomaseg.modeling.models import build_model, gflops, parse_decoder_channels
    from gliomaseg.modeling.precision import probe_device
    from gliomaseg.training.records import best_epoch
    from gliomaseg.training.run import train

    train_csv, val_csv = split_csvs(data, spec.split)
    resume = (run_dir / LAST_CHECKPOINT).is_file()
    summary_path = run_dir / "summary.json"
    trained = _status(run_dir).get("trained") and summary_path.is_file()
    if resume:
        overrides = _as_started(spec, run_dir, overrides, preset_keys, announce=not trained)
    options = {**spec.options, **overrides}
    config = TrainConfig.from_dict({**options, "out": str(run_dir), "train_csv": str(train_csv), "val_csv": str(val_csv),
                                    "resume": resume, "progress": False})
    if not trained:
        _set_status(run_dir, state="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
        train(config)
        _set_status(run_dir, trained=True)
    summary = json.loads(summary_path.read_text())
    # Scored where it trained: on a GPU machine, CPU scoring of several runs at once took longer than their training.
    device = probe_device(config.accelerator)
    report = evaluate(run_dir / BEST_CHECKPOINT, val_csv, run_dir / "eval", compare=score_variants, device=device)
    variants = {f"variant_{name.replace(':', '_')}": scores["patient_dice_mean"] for name, scores in report.get("variants", {}).items()
                if name != "none"}
    write_run_card(run_dir)  # the card now carries the evaluation too
    last = {}
    if score_last:
        last_report = evaluate(run_dir / LAST_CHECKPOINT, val_csv, run_dir / "eval_last", compare=False, device=device)
        last = {f"{key}_last": last_report[key] for key in ("patient_dice_mean", "patient_dice_median", "iou_imagewise_tumour_slices", "iou_imagewise")}
    model = build_model(config.model, config.encoder, decoder_channels=parse_decoder_channels(config.decoder_channels))
    return {
        "run": spec.name, "model": summary["model"], "encoder": summary["encoder"], "loss": summary["loss"],
        "split": spec.split, "lowlr": bool(options.get("lowlr", False)), "image_size": config.image_size,
        "iou_imagewise": report["iou_imagewise"], "dice_imagewise": report["dice_imagewise"],
        "iou_imagewise_tumour_slices": report["iou_imagewise_tumour_slices"], "iou_micro": report["iou_micro"],
        "patient_dice_mean": report["patient_dice_mean"], "patient_dice_median": report["patient_dice_median"],
        "epochs": summary["epochs_completed"], "train_seconds": summary["train_seconds"],
        "images_per_s": summary["train_images_per_second"], "parameters_M": round(summary["parameters"] / 1e6, 2),
        "gflops": round(gflops(model, config.image_size), 2), "reference_iou": spec.reference,
        "best_epoch": best_epoch(run_dir), "eval_device": device, **last, **variants, "status": "done",
    }


def run_experiment(
    name_or_path: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    preset: str = "cpu",
    epochs: int | None = None,
    image_size: int | None = None,
    max_time: str | None = None,
    only: list[str] | None = None,
    include_extra: bool = False,
    extra_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run (or continue) an experiment under ``out/<name>``; returns the results table."""
    experiment = load_experiment(name_or_path)
    presets = experiment_presets(experiment)
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(presets)}")
    data = Path(data)
    if not (data / "data_info.csv").is_file():
        raise DataError(f"{data}: no data_info.csv here; run `gliomaseg prepare --data-path ... --out {data}` first")
    # Precedence: the preset (hardware budget and recipe) < what a run compares (YAML base and run) < command-line options.
    preset_options = dict(presets[preset])
    overrides = {k: v for k, v in {"epochs": epochs, "image_size": image_size, "max_time": max_time}.items() if v is not None}
    overrides.update(extra_options or {})
    runs = [r for r in experiment.runs if include_extra or not r.extra]
    if only:
        missing = sorted(set(only) - {r.name for r in experiment.runs})
        if missing:
            raise ConfigError(f"--only names no run of {experiment.name}: {', '.join(missing)}; runs: {', '.join(r.name for r in experiment.runs)}")
        runs = [r for r in experiment.runs if r.name in only]
    for spec in runs:  # a missing fold CSV stops everything before anything trains, not one run after another
        if FOLD_SPLIT.fullmatch(spec.split):
            split_csvs(data, spec.split)
    root = Path(out) / experiment.name
    root.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps({"experiment": experiment.name, "description": experiment.description, "file": _portable_path(experiment.path),
                           "preset": preset, "preset_options": preset_options,
                           "preset_scope": (f"decoder_channels goes to {PRESET_DECODER_ARCHITECTURE} runs only; each run's "
                                            "config.json holds the options it trained with"),
                           "overrides": overrides,
                           "data": str(data)}, indent=2), root / "experiment.json")  # no absolute path of this machine
    rows: dict[str, dict] = {}
    for spec in runs:
        run_dir = root / spec.name
        status = _status(run_dir)
        if status.get("state") == "done" and status.get("row") and _has_scores(status["row"], experiment):
            print(f"[{experiment.name}] {spec.name}: done, skipped")
            rows[spec.name] = status["row"]
            continue
        print(f"[{experiment.name}] {spec.name}: {'resuming' if (run_dir / LAST_CHECKPOINT).is_file() else 'starting'}")
        try:
            from_preset = _preset_for(spec, preset_options, overrides)
            row = run_one(spec, data, run_dir, {**from_preset, **overrides}, score_last=experiment.score_last,
                          score_variants=experiment.score_variants, preset_keys=[k for k in from_preset if k not in overrides])
            _set_status(run_dir, state="done", row=row, error=None)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one failing run must not stop the others
            _set_status(run_dir, state="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            print(f"[{experiment.name}] {spec.name}: FAILED: {type(exc).__name__}: {exc}")
            row = {"run": spec.name, "split": spec.split, "reference_iou": spec.reference, "status": f"failed: {type(exc).__name__}: {exc}"}
        rows[spec.name] = row
    # Runs left out by --only (or --all) that finished earlier stay in the table, in the file's order.
    for spec in experiment.runs:
        status = _status(root / spec.name)
        if spec.name not in rows and status.get("state") == "done" and status.get("row"):
            rows[spec.name] = status["row"]
    order = [spec.name for spec in experiment.runs]
    results = pd.DataFrame([rows[name] for name in order if name in rows])
    write_results(results, root, experiment, preset, Path(out))
    results.attrs["folder"] = str(root)
    return results
