"""scripts/frontier.py: cross-validated Dice beside measured speed, on the folds every table shares."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from script_helpers import load_script


def test_frontier_uses_shared_folds_and_trained_speed_rows(tmp_path: Path):
    frontier = load_script("frontier")
    full, light = tmp_path / "full.csv", tmp_path / "light.csv"
    pd.DataFrame({"fold": ["fold0", "fold0", "fold1", "fold3"], "patient": list("ABCD"), "dice_3d": [0.9, 0.7, 0.8, 0.1]}).to_csv(full, index=False)
    pd.DataFrame({"fold": ["fold0", "fold0", "fold1"], "patient": list("ABC"), "dice_3d": [0.8, 0.7, 0.6]}).to_csv(light, index=False)
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"meta": {"machine": "cpu [avx2]", "date": "2026-12-02"}, "rows": [
        {"decoder_channels": "256,128,64,32,16", "weights": "random", "gflop_per_slice": 5.91, "fp32_slices_per_s": 1.0, "int8_slices_per_s": 2.0},
        {"decoder_channels": "256,128,64,32,16", "weights": "trained (cv/fold0)", "gflop_per_slice": 5.91, "fp32_slices_per_s": 20.0, "int8_slices_per_s": 40.0},
        {"decoder_channels": "128,64,32,16,8", "weights": "trained (light/fold0)", "gflop_per_slice": 2.45, "fp32_slices_per_s": 40.0, "int8_slices_per_s": None},
    ]}))
    out = tmp_path / "docs" / "frontier"
    assert frontier.main(["--speed", str(speed), "--dice", f"256,128,64,32,16={full}", f"128,64,32,16,8={light}", "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv")).set_index("decoder_channels")
    assert table.loc["256,128,64,32,16", "patients"] == 3  # fold3 ran for one width only: left out
    assert table.loc["256,128,64,32,16", "patient_dice_mean"] == pytest.approx(0.8)
    assert table.loc["128,64,32,16,8", "patient_dice_mean"] == pytest.approx(0.7)
    assert table.loc["128,64,32,16,8", "paired_difference"] == pytest.approx(-0.1)  # A -0.1, B 0, C -0.2
    assert table.loc["128,64,32,16,8", "paired_se"] == pytest.approx(0.0577, abs=1e-4)
    assert table.loc["256,128,64,32,16", "fp32_slices_per_s"] == 20.0  # the trained row, not the random one
    assert out.with_suffix(".png").stat().st_size > 5000
    missing = frontier.main(["--speed", str(speed), "--dice", f"64,32,16,16,8={light}", "--out", str(out)])
    assert missing == 2
