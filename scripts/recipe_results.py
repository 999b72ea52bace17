"""Collect recipe runs into docs/results: one row a run, with the command that made it.

    .venv/bin/python scripts/recipe_results.py RUNS_DIR [RUNS_DIR ...] --out docs/results/recipe

Each run folder is a ``gliomaseg train`` output evaluated by ``gliomaseg evaluate`` into ``eval_best/``
and ``eval_last/`` (native 256 px, the validation CSV). Writes ``<out>.csv``, ``<out>_table.md``,
``<out>_curves.csv`` (each run's validation scores by epoch, as training logged them) and ``<out>.png``
(validation per-patient Dice against training minutes, one line a run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from gliomaseg.experiments.summary import markdown_table
from gliomaseg.training.config import TrainConfig
from gliomaseg.training.records import read_metrics

FLAGS = ("model", "encoder", "encoder_weights", "image_size", "epochs", "batch_size", "loss", "oversample", "optimizer", "lr",
         "scheduler", "precision", "max_time")


def command(config: dict) -> str:
    """The ``gliomaseg train`` command of a run, from its config.json (options that differ from the defaults, plus the data)."""
    defaults = TrainConfig(out="")
    parts = ["gliomaseg train", f"--data {Path(config['data']).name if config.get('data') else '?'}"]
    for key in FLAGS:
        value = config.get(key)
        if key in ("model", "encoder", "image_size", "epochs", "loss") or (value is not None and value != getattr(defaults, key, None)):
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def _scores(path: Path) -> dict:
    if not path.is_file():
        return {}
    s = json.loads(path.read_text())
    variants = s.get("variants", {})
    row = {k: s.get(k) for k in ("patient_dice_mean", "patient_dice_median", "iou_imagewise", "iou_imagewise_tumour_slices", "iou_micro")}
    for name, key in (("tta:flip", "tta_flip"), ("post:largest_3d", "post_largest_3d"), ("post:min_size", "post_min_size"), ("post:all", "post_all")):
        if name in variants:
            row[f"patient_dice_mean_{key}"] = variants[name]["patient_dice_mean"]
    return row


CURVE = ("val_patient_dice", "val_patient_dice_median", "val_iou_imagewise", "val_iou_tumour_slices", "val_iou_micro")


def collect(run: Path) -> tuple[dict, pd.DataFrame]:
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    metrics = read_metrics(run)
    curve = (metrics.dropna(subset=["val_patient_dice"])[["epoch", *(c for c in CURVE if c in metrics)]].reset_index(drop=True)
             if "val_patient_dice" in metrics else pd.DataFrame())
    if "train_minutes" in metrics and len(curve):
        minutes = metrics.dropna(subset=["train_minutes"]).groupby("epoch")["train_minutes"].last().sort_index()
        # Runs resumed before train_minutes carried over restart at 0 in the new session: add the earlier total.
        offset, previous, cumulative = 0.0, 0.0, {}
        for epoch, value in minutes.items():
            if value + offset < previous:
                offset = previous
            cumulative[epoch] = previous = value + offset
        curve = curve.assign(train_minutes=curve["epoch"].map(cumulative))
    best = _scores(run / "eval_best" / "summary.json") or _scores(run / "eval" / "summary.json")
    last = _scores(run / "eval_last" / "summary.json")
    row = {
        "run": run.name,
        "epochs": summary.get("epochs_completed"),
        "train_minutes": round(float(curve["train_minutes"].max()), 1) if "train_minutes" in curve and len(curve)
        else round(summary.get("train_seconds", float("nan")) / 60, 1),
        "images_per_s": summary.get("train_images_per_second"),
        "best_epoch_val_dice": float(curve["val_patient_dice"].max()) if len(curve) else None,
        "best_epoch": int(curve["epoch"][curve["val_patient_dice"].idxmax()]) + 1 if len(curve) else None,  # counted from 1
        "last_epoch_val_dice": float(curve["val_patient_dice"].iloc[-1]) if len(curve) else None,
        **{f"last_epoch_{key}": float(curve[key].iloc[-1]) for key in CURVE[1:] if key in curve and len(curve)},
        **{f"best_{k}": v for k, v in best.items()},
        **{f"last_{k}": v for k, v in last.items()},
        "command": command(config),
    }
    return row, curve.assign(run=run.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or folders of run folders")
    parser.add_argument("--out", type=Path, required=True, help="output prefix, e.g. docs/results/recipe")
    parser.add_argument("--machine", default="2 CPU cores", help="what the runs trained on, for the plot's axis")
    args = parser.parse_args(argv)
    folders = []
    for path in args.runs:
        folders += [path] if (path / "config.json").is_file() else sorted(p for p in path.iterdir() if (p / "config.json").is_file())
    rows, curves = zip(*(collect(f) for f in folders)) if folders else ((), ())
    if not rows:
        print("no run folders found", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    pd.concat([c.assign(epoch=c["epoch"].astype(int) + 1) for c in curves if len(c)]).to_csv(args.out.with_name(args.out.name + "_curves.csv"), index=False)
    args.out.with_name(args.out.name + "_table.md").write_text("\n".join(markdown_table(table)) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for curve in curves:
        if len(curve) and "train_minutes" in curve:
            ax.plot(curve["train_minutes"], curve["val_patient_dice"], marker="o", ms=3, label=curve["run"].iloc[0])
    ax.axhline(0.82, color="grey", ls="--", lw=1, label="target 0.82 (Buda et al. 2019, U-Net)")
    ax.set_xlabel(f"training minutes ({args.machine})")
    ax.set_ylabel("validation mean per-patient 3D Dice")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(table.drop(columns="command").to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
