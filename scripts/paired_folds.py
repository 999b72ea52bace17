"""Paired per-patient comparison of two cross-validations on the same patient-grouped folds.

    .venv/bin/python scripts/paired_folds.py CANDIDATE BASELINE --info data/data_info.csv --out docs/results/NAME

CANDIDATE and BASELINE are each an experiment folder (``fold*/eval_last/patients.csv``, the last epoch: no
checkpoint picked on the held-out patients) or a pooled ``patients.csv`` with a ``fold`` column (as committed
under ``docs/results/<experiment>/``). Only the folds both have are compared, patient by patient. ``--info``
(a ``data_info.csv`` of ``prepare``) names the patients with a missing sequence, reported apart.
Writes ``patients.csv`` (the candidate's rows, pooled, with ``fold``), ``paired.csv`` (one row per patient:
both Dice and the difference) and ``paired.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gliomaseg.core.errors import DataError  # noqa: E402
from gliomaseg.core.io import write_csv, write_text  # noqa: E402
from gliomaseg.experiments.summary import LOW_DICE, LOW_DICE_MIN_TUMOUR_SLICES, fold_patients, missing_sequence_patients  # noqa: E402


def paired(candidate: pd.DataFrame, baseline: pd.DataFrame, missing: set[str]) -> pd.DataFrame:
    both = candidate.merge(baseline[["fold", "patient", "dice_3d"]], on=["fold", "patient"], suffixes=("", "_baseline"))
    both["difference"] = both["dice_3d"] - both["dice_3d_baseline"]
    both["missing_sequence"] = both["patient"].isin(missing)
    return both


def summary_lines(both: pd.DataFrame, name: str, baseline_name: str) -> list[str]:
    diff = both["difference"]
    se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    lines = [
        f"Folds compared: {', '.join(sorted(both['fold'].unique()))} ({len(both)} held-out patients, each scored at the last epoch).",
        "",
        "| | patients | candidate mean / median | baseline mean / median | paired difference (se) | better / worse |",
        "|---|---|---|---|---|---|",
    ]
    groups = [("all", both), ("missing a sequence", both[both["missing_sequence"]]), ("all three sequences", both[~both["missing_sequence"]])]
    for label, group in groups:
        if not len(group):
            continue
        d = group["difference"]
        group_se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        lines.append(f"| {label} | {len(group)} | {group['dice_3d'].mean():.3f} / {group['dice_3d'].median():.3f} | "
                     f"{group['dice_3d_baseline'].mean():.3f} / {group['dice_3d_baseline'].median():.3f} | "
                     f"{d.mean():+.3f} ({group_se:.3f}) | {int((d > 0).sum())} / {int((d < 0).sum())} |")
    lines += ["", f"Candidate: {name}. Baseline: {baseline_name}. Per-patient 3D Dice (mean over patients, each patient's "
              f"slices as one volume); paired difference = candidate - baseline, se = its standard error ({se:.3f} over all).",
              "", "Largest changes:", "", "| fold | patient | tumour slices | candidate | baseline | difference |", "|---|---|---|---|---|---|"]
    order = both.reindex(both["difference"].abs().sort_values(ascending=False).index).head(8)
    for _, row in order.iterrows():
        lines.append(f"| {row['fold']} | {row['patient']}{' (missing sequence)' if row['missing_sequence'] else ''} | "
                     f"{row.get('tumour_slices', '-')} | {row['dice_3d']:.3f} | {row['dice_3d_baseline']:.3f} | {row['difference']:+.3f} |")
    low = (both[(both["tumour_slices"] >= LOW_DICE_MIN_TUMOUR_SLICES) & (both["dice_3d"] < LOW_DICE)]
           if "tumour_slices" in both else both.iloc[:0])
    lines += ["", f"Patients with at least {LOW_DICE_MIN_TUMOUR_SLICES} tumour slices below {LOW_DICE} (candidate): "
              f"{', '.join(f'{p} ({d:.2f})' for p, d in zip(low['patient'], low['dice_3d'])) or 'none'}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--info", type=Path, required=True, help="data_info.csv of prepare (its missing_sequences column)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        missing = missing_sequence_patients(args.info)
        candidate, baseline = fold_patients(args.candidate), fold_patients(args.baseline)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    both = paired(candidate, baseline, missing)
    if both.empty:
        raise SystemExit(f"{args.candidate} and {args.baseline} share no (fold, patient)")
    write_csv(candidate, args.out / "patients.csv")
    write_csv(both, args.out / "paired.csv")
    def label(path: Path) -> str:
        return path.parent.name if path.is_file() else path.name

    lines = summary_lines(both, label(args.candidate), label(args.baseline))
    write_text("\n".join(lines) + "\n", args.out / "paired.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
