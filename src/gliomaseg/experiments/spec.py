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

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gliomaseg.core.errors import ConfigError
from gliomaseg.core.io import check_name
from gliomaseg.training.config import TrainConfig, train_default

# The shipped experiment files are package data: found through importlib.resources in a wheel as in a source tree.
CONFIG_DIR = Path(str(resources.files("gliomaseg") / "configs" / "experiments"))
REFERENCE_LABEL = "case study (GPU, ImageNet encoder, mIoU picked and reported on val)"

PRESETS: dict[str, dict[str, Any]] = {
    # The case study's setting: TrainConfig's defaults (named, so experiment.json records them), fp32 and 4 workers.
    "gpu": {**{k: train_default(k) for k in ("image_size", "epochs", "batch_size", "optimizer", "lr", "scheduler")},
            "precision": "32", "workers": 4},
    # The CPU recipe (docs/results/recipe.md): 256 px, 16 epochs (crossval_long.md: +0.020 paired over 65 patients
    # against 8, adopted by its rule on all 5 folds; the files measured at 8 pin 8 in their own presets entry),
    # dice+bce, Adam + cosine, bf16 where it is faster,
    # each patient's intensities standardized (crossval.md decided it on 65 held-out patients), and the robustness
    # augmentation (a FLAIR copy for a missing sequence, per-channel intensity, zoom 0.7-1.4), adopted by its rule
    # on all 5 folds (crossval_robust.md: +0.031 paired over 65 patients), and the lighter Unet decoder (128-64-32-16-8,
    # 2.4x fewer FLOPs; crossval_light.md: within 0.01 on all 5 folds), which applies to Unet only (what it was
    # measured on; Unet++ and the rest keep smp's decoder). With --encoder timm-tf_efficientnet_lite0
    # --encoder-weights imagenet, trained on all 65 patients (--val-csv none), it made the shipped model.
    "cpu": {"image_size": 256, "epochs": 16, "batch_size": 16, "loss": "dice+bce", "optimizer": "adam", "lr": 0.002,
            "scheduler": "cosine", "precision": "auto", "workers": 0, "cache": True, "intensity": "patient",
            "missing_sequence_p": 0.15, "intensity_augment_p": 0.3, "scale_min": 0.7, "scale_max": 1.4,
            "decoder_channels": "128,64,32,16,8"},
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


def experiment_presets(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """The presets an experiment runs under: the built-in ones, each amended by the file's ``presets`` entry of that
    name (``presets: {cpu: {epochs: 8}}`` keeps the length a result was measured with when the preset moves on, and
    leaves the gpu preset alone); a name the built-ins lack is a new preset of the file's own."""
    merged = {name: dict(options) for name, options in PRESETS.items()}
    for name, options in experiment.presets.items():
        merged[name] = {**merged.get(name, {}), **options}
    return merged


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


def _check_values(options: dict[str, Any], path: Path, label: str) -> None:
    """Refuse options TrainConfig would refuse, naming the file and the run or preset they belong to."""
    try:
        TrainConfig.from_dict({"out": "-", "data": "-", **options}).validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {label}: {exc}") from exc


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
        name = check_name(str(entry["name"]), "run name", path, ConfigError)
        if name in names:
            raise ConfigError(f"{path}: two runs are named {name!r}")
        names.add(name)
        split = entry.get("split", "patient")
        if split not in ("patient", "image") and not FOLD_SPLIT.fullmatch(str(split)):
            raise ConfigError(f"{path}: run {name!r}: split must be patient, image or foldK (K = 0, 1, ...), got {split!r}")
        options = {**base, **{k: v for k, v in entry.items() if k not in RUN_KEYS}}
        _check_values(options, path, f"run {name!r}")
        runs.append(RunSpec(name=name, options=options, split=split, reference=entry.get("reference"), extra=bool(entry.get("extra"))))
    presets = raw.get("presets") or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError(f"{path}: presets must map a preset name to its options")
    for preset, opts in presets.items():
        bad = sorted(set(opts) - train_keys)
        if bad:
            raise ConfigError(f"{path}: preset {preset!r}: unknown option(s) {', '.join(bad)}")
        _check_values(opts, path, f"preset {preset!r}")  # at load, as a run's are: not once training has begun
    compare_with = raw.get("compare_with")
    return Experiment(name=check_name(str(raw.get("name", path.stem)), "experiment name", path, ConfigError), description=str(raw.get("description", "")),
                      runs=runs, path=path, compare_with=None if compare_with is None else check_name(str(compare_with), "compare_with", path, ConfigError),
                      presets=presets, score_last=bool(raw.get("score_last", False)),
                      score_variants=bool(raw.get("score_variants", False)))
