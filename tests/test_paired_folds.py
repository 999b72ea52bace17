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


def test_crossval_headline_says_what_it_cannot_know(tmp_path: Path):
    from gliomaseg.core.errors import DataError
    from gliomaseg.experiments.summary import crossval_headline, fold_patients, missing_sequence_patients
    from gliomaseg.modeling.card import crossval_markdown

    pooled = tmp_path / "patients.csv"
    # Numeric patient ids: read as text in both tables, so the missing-sequence patient is found.
    pd.DataFrame({"fold": ["fold0", "fold1"], "patient": ["007", "8"], "dice_3d": [0.1, 0.9]}).to_csv(pooled, index=False)
    pd.DataFrame({"patient": ["007", "8"], "missing_sequences": ["post-contrast", ""]}).to_csv(tmp_path / "info.csv", index=False)
    cv = crossval_headline(fold_patients(pooled), missing_sequence_patients(tmp_path / "info.csv"), "cv")
    assert cv["missing_sequence"] == {"patients": 1, "mean": 0.1, "others_mean": 0.9}
    assert cv["low"] is None  # no tumour_slices column: a failure cannot be told from a small tumour
    text = "\n".join(crossval_markdown(cv))
    assert "unknown (the cross-validation's table has no tumour_slices column)" in text and "None" not in text
    only_missing = crossval_headline(fold_patients(pooled), {"007", "8"}, "cv")
    assert only_missing["missing_sequence"]["others_mean"] is None and crossval_markdown(only_missing)  # no crash
    pd.DataFrame({"fold": ["fold0", "fold1"], "patient": ["A", "A"], "dice_3d": [0.5, 0.6]}).to_csv(pooled, index=False)
    with pytest.raises(DataError, match="held out by more than one fold"):  # folds of two different prepare runs
        fold_patients(pooled)
    pd.DataFrame({"fold": ["fold0"], "patient": ["A"], "dice_3d": ["nan"]}).to_csv(pooled, index=False)
    with pytest.raises(DataError, match=r"patients.csv: patient A has no numeric dice_3d"):
        fold_patients(pooled)
    with pytest.raises(DataError, match="neither an experiment folder"):
        fold_patients(tmp_path / "nothing")
    with pytest.raises(DataError, match="info2.csv: not a readable CSV"):
        missing_sequence_patients(tmp_path / "info2.csv")
