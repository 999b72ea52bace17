"""Comparison experiments from YAML files: each run an ordinary training run in its own folder.

An experiment file (``src/gliomaseg/configs/experiments/NAME.yaml``, shipped in the package)::

    name: encoders
    description: ...
    base: {model: unet}                 # TrainConfig values shared by every run
    compare_with: architectures         # optional: another experiment shown beside this one
    runs:
      - {name: resnet18, encoder: resnet18, reference: 0.82}   # reference: the case study's number
      - {name: image, split: image}     # split: patient (default) or image
      - {name: UPerNet, model: upernet, extra: true}           # only with --all
      - {name: fold0, split: fold0}     # split: foldK, the CSVs of `prepare --folds`
    score_last: true                    # optional: also score last.ckpt (the pick-free number)
    score_variants: true                # optional: evaluate's TTA / post-processing table for best.ckpt

Runs whose split is ``foldK`` make a cross-validation: ``results.md`` then adds the mean and spread over
folds and the per-patient Dice pooled over every held-out patient (``crossval.json``).

The runner skips finished runs, resumes interrupted ones from ``last.ckpt``, records a failing
run as failed and goes on, then writes ``results.csv``, ``results.md`` and ``results.png``.
"""

from __future__ import annotations

import json
import math
import re
import time
import traceback
from importlib import resources
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gliomaseg.data.files import safe_name, write_csv, write_text
from gliomaseg.errors import ConfigError, DataError
from gliomaseg.training import TrainConfig

# The shipped experiment files are package data: found through importlib.resources in a wheel as in a source tree.
CONFIG_DIR = Path(str(resources.files("gliomaseg") / "configs" / "experiments"))
REFERENCE_LABEL = "case study (GPU, ImageNet encoder, mIoU picked and reported on val)"

PRESETS: dict[str, dict[str, Any]] = {
    # The case study's setting.
    "gpu": {"image_size": 256, "epochs": 100, "batch_size": 16, "optimizer": "sgd", "lr": 0.01, "scheduler": "plateau",
            "precision": "32", "workers": 4},
    # The CPU recipe (docs/results/recipe.md): 256 px, 8 epochs, dice+bce, Adam + cosine, bf16 where it is faster,
    # each patient's intensities standardized (crossval.md decided it on 65 held-out patients). With
    # --encoder timm-tf_efficientnet_lite0 --encoder-weights imagenet it made the shipped model.
    "cpu": {"image_size": 256, "epochs": 8, "batch_size": 16, "loss": "dice+bce", "optimizer": "adam", "lr": 0.002,
            "scheduler": "cosine", "precision": "auto", "workers": 0, "cache": True, "intensity": "patient"},
}
RUN_KEYS = {"name", "reference", "split", "extra"}
FILE_KEYS = {"name", "description", "base", "runs", "compare_with", "presets", "score_last", "score_variants"}
FOLD_SPLIT = re.compile(r"fold(\d+)")


@dataclass
class RunSpec:
    name: str
    options: dict[str, Any]
    split: str = "patient"
    reference: float | None = None
    extra: bool = False


@dataclass
class Experiment:
    name: str
    description: str
    runs: list[RunSpec]
    path: Path
    compare_with: str | None = None
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    score_last: bool = False
    score_variants: bool = False


def experiment_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: experiment file does not exist")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown experiment {name_or_path!r}; known: {', '.join(known) or '(none: ' + str(CONFIG_DIR) + ' is empty)'} "
                          "(or give a .yaml path)")
    return candidate


def shipped_experiments() -> list[Experiment]:
    """Every experiment that ships with gliomaseg, loaded and checked, by name."""
    return [load_experiment(p.stem) for p in sorted(CONFIG_DIR.glob("*.yaml"))]


def load_experiment(name_or_path: str | Path) -> Experiment:
    """Read and check an experiment file; every run's options are validated before anything runs."""
    path = experiment_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise ConfigError(f"{path}: an experiment needs a 'runs' list")
    unknown = sorted(set(raw) - FILE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(FILE_KEYS))}")
    base = raw.get("base") or {}
    train_keys = set(TrainConfig.__dataclass_fields__) - {"out", "data", "train_csv", "val_csv", "resume"}
    runs, names = [], set()
    for index, entry in enumerate(raw["runs"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{path}: run {index + 1} needs a name")
        bad = sorted(set(entry) - RUN_KEYS - train_keys) + sorted(set(base) - train_keys)
        if bad:
            raise ConfigError(f"{path}: run {entry['name']!r}: unknown option(s) {', '.join(bad)}; valid: "
                              f"{', '.join(sorted(RUN_KEYS | train_keys))}")
        name = safe_name(str(entry["name"]), "run name", path, ConfigError)
        if name in names:
            raise ConfigError(f"{path}: two runs are named {name!r}")
        names.add(name)
        split = entry.get("split", "patient")
        if split not in ("patient", "image") and not FOLD_SPLIT.fullmatch(str(split)):
            raise ConfigError(f"{path}: run {name!r}: split must be patient, image or foldK (K = 0, 1, ...), got {split!r}")
        options = {**base, **{k: v for k, v in entry.items() if k not in RUN_KEYS}}
        try:
            TrainConfig.from_dict({"out": "-", "data": "-", **options}).validate()
        except ConfigError as exc:
            raise ConfigError(f"{path}: run {name!r}: {exc}") from exc
        runs.append(RunSpec(name=name, options=options, split=split, reference=entry.get("reference"), extra=bool(entry.get("extra"))))
    compare_with = raw.get("compare_with")
    return Experiment(name=safe_name(str(raw.get("name", path.stem)), "experiment name", path, ConfigError), description=str(raw.get("description", "")),
                      runs=runs, path=path, compare_with=None if compare_with is None else safe_name(str(compare_with), "compare_with", path, ConfigError),
                      presets=raw.get("presets") or {}, score_last=bool(raw.get("score_last", False)),
                      score_variants=bool(raw.get("score_variants", False)))



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


def run_one(spec: RunSpec, data: Path, run_dir: Path, overrides: dict[str, Any], score_last: bool = False,
            score_variants: bool = False) -> dict:
    """Train (or resume) and evaluate one run; returns its results row.

    ``best.ckpt`` is scored into ``eval/``; with ``score_last`` also ``last.ckpt`` into ``eval_last/``: the
    last epoch involves no pick on the validation CSV, so the gap between the two shows how lucky the pick was.
    ``score_variants`` adds evaluate's TTA and post-processing table (``variant_*`` columns: per-patient Dice mean).
    """
    from gliomaseg.evaluation import evaluate
    from gliomaseg.models import build_model, gflops, parse_decoder_channels
    from gliomaseg.model_card import write_run_card
    from gliomaseg.precision import probe_device
    from gliomaseg.training import best_epoch, train

    train_csv, val_csv = split_csvs(data, spec.split)
    options = {**spec.options, **overrides}
    resume = (run_dir / "last.ckpt").is_file()
    config = TrainConfig.from_dict({**options, "out": str(run_dir), "train_csv": str(train_csv), "val_csv": str(val_csv),
                                    "resume": resume, "progress": False})
    summary_path = run_dir / "summary.json"
    trained = _status(run_dir).get("trained") and summary_path.is_file()
    if not trained:
        _set_status(run_dir, state="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
        train(config)
        _set_status(run_dir, trained=True)
    summary = json.loads(summary_path.read_text())
    # Scored where it trained: on a GPU machine, CPU scoring of several runs at once took longer than their training.
    device = probe_device(config.accelerator)
    report = evaluate(run_dir / "best.ckpt", val_csv, run_dir / "eval", compare=score_variants, device=device)
    variants = {f"variant_{name.replace(':', '_')}": scores["patient_dice_mean"] for name, scores in report.get("variants", {}).items()
                if name != "none"}
    write_run_card(run_dir)  # the card now carries the evaluation too
    last = {}
    if score_last:
        last_report = evaluate(run_dir / "last.ckpt", val_csv, run_dir / "eval_last", compare=False, device=device)
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
    presets = {**PRESETS, **experiment.presets}
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
                           "preset": preset, "preset_options": preset_options, "overrides": overrides,
                           "data": str(data)}, indent=2), root / "experiment.json")  # no absolute path of this machine
    rows: dict[str, dict] = {}
    for spec in runs:
        run_dir = root / spec.name
        status = _status(run_dir)
        if status.get("state") == "done" and status.get("row") and _has_scores(status["row"], experiment):
            print(f"[{experiment.name}] {spec.name}: done, skipped")
            rows[spec.name] = status["row"]
            continue
        print(f"[{experiment.name}] {spec.name}: {'resuming' if (run_dir / 'last.ckpt').is_file() else 'starting'}")
        try:
            row = run_one(spec, data, run_dir, {**{k: v for k, v in preset_options.items() if k not in spec.options}, **overrides},
                          score_last=experiment.score_last, score_variants=experiment.score_variants)
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


def _has_scores(row: dict, experiment: Experiment) -> bool:
    """Whether a finished run's saved row carries what the experiment's flags ask for (else it is scored again)."""
    return (not experiment.score_last or "patient_dice_mean_last" in row) and \
        (not experiment.score_variants or any(key.startswith("variant_") for key in row))


def _numbers(column: pd.Series) -> list[float | None]:
    return [float(v) if isinstance(v, (int, float)) and not math.isnan(v) else None for v in column]


def write_results(results: pd.DataFrame, root: Path, experiment: Experiment, preset: str, out: Path) -> None:
    """``results.csv``, ``results.md`` and ``results.png`` (per-patient Dice, and image-wise IoU beside the case study)."""
    from gliomaseg.visualization import plot_bar_panels

    other = experiment.compare_with
    if other and (out / other / "results.csv").is_file() and "patient_dice_mean" in results:
        # Each run beside the same-named run of the other experiment (lowlr beside architectures), with the difference.
        beside = pd.read_csv(out / other / "results.csv").set_index("run")
        for column in ("patient_dice_mean", "iou_imagewise"):
            if column in beside:
                results[f"{other}_{column}"] = results["run"].map(beside[column])
        if f"{other}_patient_dice_mean" in results:
            results[f"patient_dice_mean_minus_{other}"] = (pd.to_numeric(results["patient_dice_mean"], errors="coerce")
                                                           - pd.to_numeric(results[f"{other}_patient_dice_mean"], errors="coerce"))
    write_csv(results, root / "results.csv")
    folds = crossval_summary(results, root)
    write_text(results_markdown(results, experiment, preset, folds), root / "results.md")
    if "patient_dice_mean" in results:
        labels = list(results["run"])
        dice = {"mean": _numbers(results["patient_dice_mean"]), "median": _numbers(results["patient_dice_median"])}
        if other and f"{other}_patient_dice_mean" in results:
            dice = {"this experiment": dice["mean"], other: _numbers(results[f"{other}_patient_dice_mean"])}
        iou = {"ours": _numbers(results["iou_imagewise"])}
        if results["reference_iou"].notna().any():
            iou["case study"] = _numbers(results["reference_iou"])
        plot_bar_panels(labels, [("per-patient Dice (validation patients)", dice), ("image-wise IoU (empty slice = 1)", iou)],
                        root / "results.png", title=f"{experiment.name}: {experiment.description}")


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def crossval_summary(results: pd.DataFrame, root: Path) -> dict | None:
    """Mean and spread over the ``foldK`` runs, and per-patient Dice pooled over all their held-out patients.

    Written to ``crossval.json``; None when the experiment has no fold runs. Failed folds are named, and
    each mean says over how many folds it is. ``best`` numbers come from the epoch its own held-out patients
    picked; ``last`` numbers involve no pick.
    """
    if "split" not in results or "status" not in results:
        return None
    is_fold = results["split"].astype(str).str.fullmatch(FOLD_SPLIT.pattern)
    folds = results[is_fold & (results["status"] == "done")]
    if not is_fold.any():
        return None
    summary: dict[str, Any] = {"folds": list(folds["run"]), "failed_folds": list(results.loc[is_fold & (results["status"] != "done"), "run"]),
                               "note": "best: best.ckpt, picked on the fold's own held-out patients (optimistic); last: last.ckpt, no pick; "
                                       "variant_*: best.ckpt with that TTA or post-processing step"}
    scored = ["patient_dice_mean", "patient_dice_mean_last", "patient_dice_median", "iou_imagewise_tumour_slices", "iou_imagewise"]
    for column in scored + [c for c in folds if c.startswith("variant_")]:
        if column in folds:
            values = pd.to_numeric(folds[column], errors="coerce").dropna()
            if len(values):
                summary[column] = {"mean": float(values.mean()), "sd_over_folds": _finite(values.std(ddof=1)) if len(values) > 1 else None,
                                   "folds": int(len(values))}
    for name, folder in (("best", "eval"), ("last", "eval_last")):
        files = [root / run / folder / "patients.csv" for run in folds["run"]]
        if files and all(f.is_file() for f in files):
            patients = pd.concat([pd.read_csv(f) for f in files])
            repeated = sorted(patients.loc[patients["patient"].duplicated(), "patient"].unique())
            if repeated:  # folds from different `prepare --folds` runs: the pooled number would count patients twice
                raise DataError(f"{root}: patients held out by more than one fold ({', '.join(repeated[:5])}); were the folds re-made?")
            dice = patients["dice_3d"]
            summary[f"pooled_patient_dice_{name}"] = {"patients": int(len(dice)), "mean": float(dice.mean()),
                                                      "median": float(dice.median()), "sd": _finite(dice.std(ddof=1))}
    write_text(json.dumps(summary, indent=2), root / "crossval.json")
    return summary


COLUMNS = ["run", "patient_dice_mean", "patient_dice_median", "patient_dice_mean_last", "iou_imagewise_tumour_slices", "iou_micro",
           "iou_imagewise", "reference_iou", "dice_imagewise", "best_epoch", "epochs", "train_seconds", "images_per_s", "parameters_M",
           "gflops", "status"]


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None) -> list[str]:
    """Lines of a Markdown table; floats with 3 decimals, missing values as ``-``."""
    columns = columns or list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: pd.DataFrame, experiment: Experiment, preset: str, folds: dict | None = None) -> str:
    other = experiment.compare_with
    compared = [c for c in (f"{other}_patient_dice_mean", f"patient_dice_mean_minus_{other}", f"{other}_iou_imagewise") if other and c in results]
    columns = [c for c in COLUMNS if c in results] + compared + [c for c in results if c.startswith("variant_")]
    lines = [f"# Experiment `{experiment.name}`: {experiment.description}", "",
             f"Preset `{preset}`. Scores are on each run's validation CSV, the same CSV that picked `best.ckpt`.", ""]
    lines += markdown_table(results, columns)
    if folds:
        failed = f" ({', '.join(folds['failed_folds'])} failed)" if folds["failed_folds"] else ""
        lines += ["", f"## Over the {len(folds['folds'])} finished folds{failed}", "",
                  "Each fold's patients are held out of its training; `best` is still picked on them, `last` is not.", ""]
        for key, value in folds.items():
            if key.startswith("pooled_"):
                sd = "-" if value["sd"] is None else f"{value['sd']:.3f}"
                lines.append(f"- `{key}`: {value['mean']:.3f} mean, {value['median']:.3f} median, sd {sd} over {value['patients']} patients")
            elif isinstance(value, dict):
                spread = "-" if value["sd_over_folds"] is None else f"{value['sd_over_folds']:.3f}"
                lines.append(f"- `{key}`: {value['mean']:.3f} mean over {value['folds']} folds, sd {spread}")
    lines += ["", "- `iou_imagewise`: mean per-slice IoU, an empty slice predicted empty scores 1 (the case study's mIoU).",
              "- `iou_imagewise_tumour_slices`: the same over slices with tumour only (no free 1s).",
              "- `iou_micro`: dataset-wise IoU from counts summed over all slices.",
              "- `patient_dice_*`: 3D Dice of each validation patient's slices as one volume, mean and median over patients.",
              f"- `reference_iou`: {REFERENCE_LABEL}.",
              "- `patient_dice_mean_last`: the same for `last.ckpt`, which no validation score picked.",
              "- `variant_*`: per-patient Dice mean of `best.ckpt` with that TTA or post-processing step (evaluate's table).",
              "- `best_epoch`: the epoch (from 1) that picked `best.ckpt`; `epochs`: epochs trained (fewer under `max_time`).",
              "- `images_per_s`: training images per second, data loading included; `gflops`: forward pass of one image."]
    if compared:
        lines.append(f"- `{other}_*`: the same-named run of experiment `{other}`; `patient_dice_mean_minus_{other}`: this run's minus that one.")
    return "\n".join(lines) + "\n"
