"""scripts/case_study_claims.py judges each claim on the tables, against the run-to-run noise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from script_helpers import load_script


def _module():
    return load_script("case_study_claims")


def _write(folder: Path, name: str, scores: dict[str, float]) -> None:
    (folder / name).mkdir(parents=True)
    pd.DataFrame({"run": list(scores), "patient_dice_mean": list(scores.values()), "iou_imagewise": list(scores.values()),
                  "epochs": 3, "status": "done"}).to_csv(folder / name / "results.csv", index=False)


def test_claims_are_judged_against_noise(tmp_path: Path):
    base = {"Unet": 0.70, "UnetPlusPlus": 0.80, "MAnet": 0.71, "Linknet": 0.69, "FPN": 0.72, "PSPNet": 0.66,
            "DeepLabV3": 0.73, "DeepLabV3Plus": 0.78, "PAN": 0.60, "Unet-seed7": 0.68, "Unet-resnet18-scratch": 0.55}
    _write(tmp_path, "architectures", base)
    low = {name: score - 0.04 for name, score in base.items()} | {"DeepLabV3": 0.735, "MAnet": 0.72, "PAN": 0.601}
    _write(tmp_path, "lowlr", low)
    text = _module().report(tmp_path)
    assert "Run-to-run noise (Unet vs Unet-seed7): 0.020, the gap between the two runs' means (no per-patient" in text
    assert "**\"Unet++ and DeepLabV3+ are the best\"**: holds" in text  # 0.78 vs third 0.73: 0.05 > noise
    assert "**\"PAN is the worst\"**: holds" in text  # 0.60 vs 0.66
    assert "resnet18 from scratch 0.550: +0.150, holds" in text
    assert "\"lowlr costs 3-4 points\"** (mean over the 6 architectures it should hurt): -0.040, holds" in text
    assert "\"except DeepLabV3, MAnet and PAN\"** (mean over them): +0.005, within noise" in text
    assert "  - DeepLabV3 alone: +0.005, within noise" in text and "  - MAnet alone: +0.010, within noise" in text
    assert "## Losses\n\nNot measured" in text


def test_a_margin_inside_the_noise_is_not_a_finding(tmp_path: Path):
    base = {n: 0.70 for n in ("Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus")}
    _write(tmp_path, "architectures", base | {"PAN": 0.69, "Unet-seed7": 0.75})
    text = _module().report(tmp_path)
    assert "**\"PAN is the worst\"**: within noise (margin 0.010 <= run-to-run gap 0.050)" in text
    assert "## Encoder at 0.1x learning rate\n\nNot measured" in text


def test_per_patient_swings_widen_the_noise(tmp_path: Path):
    """Means that agree by luck do not make a small noise: the paired per-patient spread counts."""
    base = {"Unet": 0.70, "UnetPlusPlus": 0.80, "MAnet": 0.71, "Linknet": 0.69, "FPN": 0.72, "PSPNet": 0.66,
            "DeepLabV3": 0.73, "DeepLabV3Plus": 0.78, "PAN": 0.60, "Unet-seed7": 0.70, "Unet-resnet18-scratch": 0.55}
    _write(tmp_path, "architectures", base)
    patients = [f"P{i}" for i in range(4)]
    for run, dice in (("Unet", [0.9, 0.5, 0.9, 0.5]), ("Unet-seed7", [0.5, 0.9, 0.5, 0.9])):
        (tmp_path / "architectures" / run / "eval").mkdir(parents=True)
        pd.DataFrame({"patient": patients, "dice_3d": dice}).to_csv(tmp_path / "architectures" / run / "eval" / "patients.csv", index=False)
    text = _module().report(tmp_path)
    # differences +-0.4: sd 0.462 over 4 patients, two standard errors 0.462
    assert "Run-to-run noise (Unet vs Unet-seed7): 0.462. The two runs' means differ by 0.000" in text
    assert "**\"Unet++ and DeepLabV3+ are the best\"**: within noise (margin 0.050 <= run-to-run gap 0.462)" in text
    assert "resnet18 from scratch 0.550: +0.150, within noise" in text
