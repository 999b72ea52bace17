"""The Dice-vs-slices/s frontier of decoder widths: cross-validated per-patient Dice against measured speed.

    .venv/bin/python scripts/frontier.py --speed docs/results/crossval_light/decoder_widths_speed.json \
        --dice 256,128,64,32,16=docs/results/crossval_robust/patients.csv 128,64,32,16,8=docs/results/crossval_light/patients.csv \
        --out docs/results/frontier

Each ``--dice WIDTH=PATIENTS_CSV`` is a pooled ``patients.csv`` of a cross-validation (a ``fold`` column, each
patient scored at its fold's last epoch). Only the folds every table has are used, so each point averages the same
held-out patients. Speed comes from the benchmark JSON of ``benchmarks/decoder_widths.py``: the row of the same
width, trained weights preferred over random ones. Writes ``OUT.csv`` (one row per width) and ``OUT.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gliomaseg.core.errors import DataError  # noqa: E402
from gliomaseg.core.io import write_csv  # noqa: E402

WITHIN = 0.01  # the speed issue's bound: the lightest model within this mean per-patient Dice of the full one


def frontier(dice: dict[str, pd.DataFrame], speed: dict) -> pd.DataFrame:
    """One row per width: Dice over the shared folds (mean, se, patients; the paired difference against the widest
    decoder, patient by patient, with its se) beside fp32 and int8 slices/s."""
    shared = set.intersection(*(set(frame["fold"]) for frame in dice.values()))
    if not shared:
        raise DataError("the --dice tables share no fold")
    rows = []
    reference = max(dice, key=lambda w: sum(int(c) for c in w.split(",")))  # the widest decoder: what the others pair with
    base = dice[reference][dice[reference]["fold"].isin(shared)].set_index(["fold", "patient"])["dice_3d"]
    for width, frame in dice.items():
        scores = frame[frame["fold"].isin(shared)]["dice_3d"]
        pairs = (frame[frame["fold"].isin(shared)].set_index(["fold", "patient"])["dice_3d"] - base).dropna()
        matches = [r for r in speed["rows"] if r["decoder_channels"] == width and r.get("fp32_slices_per_s")]
        if not matches:
            raise DataError(f"no inference speed row for decoder width {width} in the benchmark JSON")
        row = sorted(matches, key=lambda r: not str(r.get("weights", "")).startswith("trained"))[0]
        if len(pairs) != len(scores):
            raise DataError(f"decoder width {width}: {len(scores)} patients on folds {', '.join(sorted(shared))}, but "
                            f"{len(pairs)} of them also in the {reference} table; the folds hold other patients")
        rows.append({"decoder_channels": width, "folds": ", ".join(sorted(shared)), "patients": len(scores),
                     "patient_dice_mean": round(float(scores.mean()), 4),
                     "patient_dice_se": round(float(scores.std(ddof=1) / math.sqrt(len(scores))), 4),
                     "patient_dice_median": round(float(scores.median()), 4),
                     "paired_against": reference, "paired_difference": round(float(pairs.mean()), 4),
                     "paired_se": round(float(pairs.std(ddof=1) / math.sqrt(len(pairs))), 4) if width != reference else 0.0,
                     "gflop_per_slice": row.get("gflop_per_slice"), "weights": row.get("weights", "random"),
                     "fp32_slices_per_s": row.get("fp32_slices_per_s"), "int8_slices_per_s": row.get("int8_slices_per_s"),
                     "ort_setting": f"fp32 {row.get('fp32_setting')}; int8 {row.get('int8_setting')}",
                     "int8_check": row.get("int8_check"), "machine": speed.get("meta", {}).get("machine"),
                     "measured": speed.get("meta", {}).get("date")})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5))
    full = table.loc[table["decoder_channels"] == table["paired_against"]].iloc[0]  # the reference of frontier()
    ax.axhspan(full["patient_dice_mean"] - WITHIN, full["patient_dice_mean"], color="0.9",
               label=f"within {WITHIN} of the full decoder's mean")
    for _, row in table.iterrows():
        rates = [r for r in (row["fp32_slices_per_s"], row["int8_slices_per_s"]) if r]
        ax.plot(rates, [row["patient_dice_mean"]] * len(rates), color="0.5", lw=1)
        for rate, marker, name in ((row["fp32_slices_per_s"], "o", "fp32"), (row["int8_slices_per_s"], "s", "int8")):
            if rate:
                ax.errorbar(rate, row["patient_dice_mean"], yerr=row["paired_se"] or None, fmt=marker, capsize=3,
                            mfc="white" if name == "fp32" else None, color="C0" if row["decoder_channels"] == full["decoder_channels"] else "C1")
        ax.annotate(f"{row['decoder_channels']} ({row['gflop_per_slice']} GFLOP)", (max(rates), row["patient_dice_mean"]),
                    textcoords="offset points", xytext=(8, 4), fontsize=8)
    ax.set_xlabel("slices/s, ONNX Runtime, threads and micro-batch by predict's probe (circle fp32, square int8)", fontsize=8)
    ax.set_ylabel(f"mean per-patient 3D Dice, {table['patients'].iloc[0]} held-out patients\n"
                  "(bars: se of the paired difference against the widest decoder)", fontsize=8)
    ax.set_title(f"Unet + EfficientNet-Lite0 at 256 px: decoder width, Dice against speed (folds {table['folds'].iloc[0]})",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.25)
    fig.text(0.01, 0.01, f"speed: {table['machine'].iloc[0]}, {table['measured'].iloc[0]}", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", type=Path, required=True, help="the JSON of benchmarks/decoder_widths.py --checkpoints (benchmarks/results/decoder_widths.json; a copy is committed as docs/results/crossval_light/decoder_widths_speed.json)")
    parser.add_argument("--dice", nargs="+", required=True, metavar="WIDTH=PATIENTS_CSV")
    parser.add_argument("--out", type=Path, required=True, help="output stem: OUT.csv and OUT.png")
    args = parser.parse_args(argv)
    try:
        dice = {}
        for item in args.dice:
            width, sep, csv = item.partition("=")
            if not sep:
                raise DataError(f"--dice {item}: expected WIDTH=PATIENTS_CSV")
            frame = pd.read_csv(csv)
            if not {"fold", "patient", "dice_3d"} <= set(frame.columns):
                raise DataError(f"{csv}: needs the columns fold, patient and dice_3d (a pooled cross-validation patients.csv)")
            dice[width] = frame
        table = frontier(dice, json.loads(args.speed.read_text()))
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, args.out.with_suffix(".csv"))
    plot(table, args.out.with_suffix(".png"))
    print(table.drop(columns=["machine"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
