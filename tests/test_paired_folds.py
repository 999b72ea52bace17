"""scripts/paired_folds.py: two cross-validations compared patient by patient, missing-sequence patients apart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from script_helpers import load_script


def test_paired_comparison_of_an_experiment_folder_with_a_pooled_csv(tmp_path: Path):
    paired_folds = load_script("paired_folds")
    experiment = tmp_path / "exp"
    for fold, rows in {"fold0": [("A", 0.9, 12), ("B", 0.5, 10)], "fold1": [("C", 0.2, 11)]}.items():
        folder = experiment / fold / "eval_last"
        folder.mkdir(parents=True)
        pd.DataFrame(rows, columns=["patient", "dice_3d", "tumour_slices"]).to_csv(folder / "patients.csv", index=False)
    baseline = tmp_path / "base" / "patients.csv"
    baseline.parent.mkdir()
    pd.DataFrame({"fold": ["fold0", "fold0", "fold1", "fold2"], "patient": ["A", "B", "C", "D"],
                  "dice_3d": [0.8, 0.7, 0.1, 0.9]}).to_csv(baseline, index=False)
    info = tmp_path / "data_info.csv"
    pd.DataFrame({"patient": ["A", "B", "C", "D"], "missing_sequences": ["", "post-contrast", "", ""]}).to_csv(info, index=False)
    assert paired_folds.main([str(experiment), str(baseline), "--info", str(info), "--out", str(tmp_path / "out")]) == 0
    both = pd.read_csv(tmp_path / "out" / "paired.csv").set_index("patient")
    assert list(both.index) == ["A", "B", "C"]  # fold2 ran in the baseline only: not compared
    assert both.loc["A", "difference"] == pytest.approx(0.1) and both.loc["B", "difference"] == pytest.approx(-0.2)
    assert bool(both.loc["B", "missing_sequence"]) and not bool(both.loc["A", "missing_sequence"])
    text = (tmp_path / "out" / "paired.md").read_text()
    assert "| all | 3 |" in text and "| missing a sequence | 1 |" in text and "| all three sequences | 2 |" in text
    assert "C (0.20)" in text  # at least 10 tumour slices and below 0.3
