"""Check the case study's conclusions against the `architectures`, `lowlr` and `losses` tables of gliomaseg.

    .venv/bin/python scripts/case_study_claims.py EXPERIMENTS_DIR --out docs/results/case_study_claims.md

EXPERIMENTS_DIR holds ``<experiment>/results.csv`` as ``gliomaseg experiment`` writes them. Each claim is
judged on the headline number (mean per-patient 3D Dice on the validation patients) and on image-wise IoU
(the case study's own measure), against run-to-run noise from ``Unet`` and ``Unet-seed7`` (the same run with another
seed): the larger of the gap between their means and two standard errors of their per-patient Dice differences
(``<run>/eval/patients.csv``). One pair's means can agree by luck while single patients swing by 0.3 or more; the
paired spread says how far two runs' means can drift apart on these patients. A difference smaller than the noise
is reported as "within noise", not as a finding. Claims whose tables are missing are listed as not measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from gliomaseg.reporting.report import paired_noise

NINE = ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN"]
LOWLR_EXCEPTIONS = {"DeepLabV3", "MAnet", "PAN"}  # the case study: lowlr helps or costs nothing for these
SCORE = "patient_dice_mean"


def _table(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name / "results.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    return table[table["status"] == "done"].set_index("run")


def _patient_dice(folder: Path, run: str) -> pd.Series | None:
    path = folder / "architectures" / run / "eval" / "patients.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path).set_index("patient")["dice_3d"].astype(float)


def noise(folder: Path, architectures: pd.DataFrame | None) -> tuple[float | None, str]:
    """Run-to-run noise of the headline from Unet vs Unet-seed7 (``gliomaseg.reporting.report.paired_noise``, which the report charts too)."""
    if architectures is None or not {"Unet", "Unet-seed7"} <= set(architectures.index):
        return None, "not measured (Unet-seed7 did not run)"
    return paired_noise(float(architectures.loc["Unet", SCORE]), float(architectures.loc["Unet-seed7", SCORE]),
                        _patient_dice(folder, "Unet"), _patient_dice(folder, "Unet-seed7"))


def _verdict(holds: bool, margin: float, spread: float | None) -> str:
    if spread is not None and margin <= spread:
        return f"within noise (margin {margin:.3f} <= run-to-run gap {spread:.3f})"
    return "holds" if holds else "does not hold"


def architecture_claims(table: pd.DataFrame, spread: float | None) -> list[str]:
    nine = table.loc[[n for n in NINE if n in table.index]]
    ranked = nine[SCORE].astype(float).sort_values(ascending=False)
    by_iou = nine["iou_imagewise"].astype(float).sort_values(ascending=False)
    lines = [f"Ranking by per-patient Dice: {', '.join(f'{n} {v:.3f}' for n, v in ranked.items())}.",
             f"Ranking by image-wise IoU: {', '.join(f'{n} {v:.3f}' for n, v in by_iou.items())}.", ""]
    best_two = {"UnetPlusPlus", "DeepLabV3Plus"}
    if best_two <= set(ranked.index) and len(ranked) > 2:
        third = float(ranked.iloc[2])
        weakest_of_pair = min(float(ranked[n]) for n in best_two)
        holds = set(ranked.index[:2]) == best_two
        margin = abs(weakest_of_pair - third) if holds else abs(float(ranked.iloc[1]) - weakest_of_pair)
        lines.append(f"- **\"Unet++ and DeepLabV3+ are the best\"**: {_verdict(holds, margin, spread)}; "
                     f"Unet++ {ranked['UnetPlusPlus']:.3f} (place {list(ranked.index).index('UnetPlusPlus') + 1}), "
                     f"DeepLabV3+ {ranked['DeepLabV3Plus']:.3f} (place {list(ranked.index).index('DeepLabV3Plus') + 1}).")
    if "PAN" in ranked.index and len(ranked) > 1:
        holds = ranked.index[-1] == "PAN"
        others = ranked.drop("PAN")
        margin = abs(float(others.min()) - float(ranked["PAN"]))
        lines.append(f"- **\"PAN is the worst\"**: {_verdict(holds, margin, spread)}; PAN {ranked['PAN']:.3f}, "
                     f"the lowest other {others.idxmin()} {others.min():.3f}.")
    if {"Unet", "Unet-resnet18-scratch"} <= set(table.index):
        gain = float(table.loc["Unet", SCORE]) - float(table.loc["Unet-resnet18-scratch", SCORE])
        lines.append(f"- **Pretraining** (not a case-study claim; it used ImageNet weights throughout): Unet with the ImageNet "
                     f"encoder {table.loc['Unet', SCORE]:.3f} vs resnet18 from scratch {table.loc['Unet-resnet18-scratch', SCORE]:.3f}: "
                     f"{'+' if gain >= 0 else ''}{gain:.3f}, {_verdict(gain > 0, abs(gain), spread)}.")
    if "epochs" in nine:
        lines.append(f"- Epochs reached in the same time: {', '.join(f'{n} {int(e)}' for n, e in nine['epochs'].items() if e == e)}.")
    return lines


def lowlr_claims(base: pd.DataFrame, low: pd.DataFrame, spread: float | None) -> list[str]:
    rows, costs, helped = [], [], []
    for name in NINE:
        if name in base.index and name in low.index:
            diff = float(low.loc[name, SCORE]) - float(base.loc[name, SCORE])
            rows.append(f"| {name} | {base.loc[name, SCORE]:.3f} | {low.loc[name, SCORE]:.3f} | {diff:+.3f} |")
            (helped if name in LOWLR_EXCEPTIONS else costs).append(diff)
    if not rows:
        return ["No architecture ran in both tables."]
    lines = ["| architecture | base | 0.1x encoder lr | difference |", "|---|---|---|---|", *rows, ""]
    if costs:
        mean_cost = sum(costs) / len(costs)
        holds = mean_cost < 0
        lines.append(f"- **\"lowlr costs 3-4 points\"** (mean over the {len(costs)} architectures it should hurt): {mean_cost:+.3f}, "
                     f"{_verdict(holds, abs(mean_cost), spread)}.")
    if helped:
        mean_help = sum(helped) / len(helped)
        lines.append(f"- **\"except DeepLabV3, MAnet and PAN\"** (mean over them): {mean_help:+.3f}, "
                     f"{_verdict(mean_help >= 0, abs(mean_help), spread)}.")
        for name in NINE:  # one exception that loses a lot must not hide in the mean of three
            if name in LOWLR_EXCEPTIONS and name in base.index and name in low.index:
                diff = float(low.loc[name, SCORE]) - float(base.loc[name, SCORE])
                lines.append(f"  - {name} alone: {diff:+.3f}, {_verdict(diff >= 0, abs(diff), spread)}.")
    return lines


def loss_claims(table: pd.DataFrame, spread: float | None) -> list[str]:
    losses = table.drop(index=[r for r in table.index if "scratch" in r], errors="ignore")
    ranked = losses[SCORE].astype(float).sort_values(ascending=False)
    lines = [f"Ranking by per-patient Dice: {', '.join(f'{n} {v:.3f}' for n, v in ranked.items())}."]
    if {"dice", "dice+bce"} <= set(ranked.index):
        diff = float(ranked["dice+bce"]) - float(ranked["dice"])
        lines.append(f"- dice+bce vs dice: {diff:+.3f}, {_verdict(diff > 0, abs(diff), spread)}.")
    if len(ranked) > 1:
        lines.append(f"- Best {ranked.index[0]} vs worst {ranked.index[-1]}: {float(ranked.iloc[0]) - float(ranked.iloc[-1]):.3f} apart.")
    return lines


def report(folder: Path) -> str:
    architectures, lowlr, losses = (_table(folder, n) for n in ("architectures", "lowlr", "losses"))
    spread, how = noise(folder, architectures)
    lines = ["# The case study's conclusions, checked on the real data", "",
             f"Made by `scripts/case_study_claims.py {folder.name}` from the experiments' `results.csv`. Headline: mean per-patient "
             "3D Dice on the validation patients (the same patients that picked each `best.ckpt`).", "",
             f"Run-to-run noise (Unet vs Unet-seed7): {how}.", ""]
    for title, table, make in (("Architectures", architectures, lambda: architecture_claims(architectures, spread)),
                               ("Encoder at 0.1x learning rate", lowlr if architectures is not None else None,
                                lambda: lowlr_claims(architectures, lowlr, spread)),
                               ("Losses", losses, lambda: loss_claims(losses, spread))):
        lines += [f"## {title}", ""]
        lines += make() if table is not None else ["Not measured: the experiment's `results.csv` is missing."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", type=Path, help="the --out folder of gliomaseg experiment")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.experiments.is_dir():
        print(f"{args.experiments}: not a folder", file=sys.stderr)
        return 1
    text = report(args.experiments)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
