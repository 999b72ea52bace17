"""The model that ships inside the package: its metadata, its card, and that it segments a slice."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from script_helpers import load_script

from gliomaseg.assets import SHIPPED_MODEL_CARD, shipped_model_path
from gliomaseg.cli import main
from gliomaseg.inference.onnx_backend import OnnxPredictor


def test_shipped_model_metadata_and_card():
    path = shipped_model_path()
    assert path.stat().st_size <= 30 * 1024 * 1024
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    info = json.loads(meta["gliomaseg"])
    assert (info["arch"], info["encoder"], info["image_size"], info["threshold"]) == ("Unet", "timm-tf_efficientnet_lite0", 256, 0.5)
    assert info["intensity"] == "patient"  # the cpu preset's recipe: each patient standardized before the network
    assert info["decoder_channels"] == [128, 64, 32, 16, 8]  # the lighter decoder, adopted by crossval_light.md's rule
    # TensorFlow EfficientNet-Lite normalization, which the pretrained encoder was trained with
    assert info["mean"] == pytest.approx([127 / 255] * 3) and info["std"] == pytest.approx([128 / 255] * 3)
    assert "/work/" not in meta["gliomaseg"] + meta["model_card"]  # no paths of the training machine
    card = json.loads(meta["model_card"])
    # Trained on all 65 patients without a pick: the card leads with its recipe's 5-fold cross-validation.
    cv = card["cross_validation"]
    assert (cv["folds"], cv["patients"]) == (5, 65) and 0.5 < cv["mean"] < 1 and len(cv["fold_means"]) == 5
    assert card["training_data"]["train"]["patients"] == 65 and card["training_data"]["model_selection"]["csv"] is None
    assert "best_val_patient_dice" not in card["validation"]
    text = (path.parent / SHIPPED_MODEL_CARD).read_text()
    assert text.index("## What to expect on new patients") < text.index("## Intended use")
    for needed in ("Intended use", "not for diagnosis", f"**Mean per-patient Dice {cv['mean']:.3f}", "missing sequence",
                   "How to reproduce", "gliomaseg train", "--val-csv none"):
        assert needed in text, needed
    from gliomaseg.inference.variants import check_problem, variant_path

    assert check_problem(path, variant_path(path)) is None  # the int8 beside it was made from this file and passed


def test_predict_without_a_model_uses_the_shipped_one(tmp_path: Path, capsys):
    from gliomaseg.data.synth import generate

    generate(tmp_path / "synth", patients=1, slices=6, seed=5)
    patient = sorted((tmp_path / "synth").iterdir())[0]
    assert main(["predict", "--input", str(patient), "--out", str(tmp_path / "pred")]) == 0
    assert "predicted 6 slice(s) of 1 patient(s)" in capsys.readouterr().out
    masks = sorted((tmp_path / "pred").rglob("*_pred.png"))
    assert len(masks) == 6
    for mask in masks:
        pixels = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (256, 256) and set(np.unique(pixels)) <= {0, 1, 255}
    predictor = OnnxPredictor(shipped_model_path())
    probabilities = predictor.probabilities(np.zeros((1, 256, 256, 3), np.uint8))
    assert probabilities.shape == (1, 256, 256) and float(probabilities.max()) < 0.5  # an empty slice: no tumour


def test_ship_model_script_writes_model_variant_and_card_without_machine_paths(trained_run: Path, prepared: Path, tmp_path: Path,
                                                                               monkeypatch):
    """scripts/ship_model.py on a run trained from CSVs (no --data, as an experiment's runs are)."""
    import shutil

    import pandas as pd
    import torch

    ship = load_script("ship_model")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "best.ckpt", run / "best.ckpt")
    config = json.loads((trained_run / "config.json").read_text())
    config.update(data=None, train_csv=str(prepared / "data_train.csv"), val_csv=str(prepared / "data_val.csv"))
    (run / "config.json").write_text(json.dumps(config))
    # The recipe's cross-validation, pooled: 4 held-out patients in 2 folds, one with a missing sequence.
    pd.DataFrame({"fold": ["fold0", "fold0", "fold1", "fold1"], "patient": ["A", "B", "C", "D"],
                  "dice_3d": [0.9, 0.2, 0.8, 0.7], "tumour_slices": [12, 15, 3, 9]}).to_csv(tmp_path / "patients.csv", index=False)
    pd.DataFrame({"patient": ["A", "B", "C", "D"], "missing_sequences": ["", "", "post-contrast", ""]}).to_csv(tmp_path / "info.csv", index=False)
    (tmp_path / "reproduce.md").write_text("## How to reproduce\n\nthe commands\n")
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / ship.SHIPPED_MODEL).write_bytes(b"the model shipped before")
    monkeypatch.setattr(ship, "ASSETS", assets)
    args = [str(run), "--crossval", str(tmp_path / "patients.csv"), "--info", str(tmp_path / "info.csv"),
            "--calibration-csv", str(prepared / "data_train.csv"), "--check-csv", str(prepared / "data_val.csv"),
            "--reproduce", str(tmp_path / "reproduce.md")]
    monkeypatch.setattr(ship, "MAX_BYTES", 1000)  # too big: refused, and the model shipped before is untouched
    assert ship.main(args) == 1
    assert (assets / ship.SHIPPED_MODEL).read_bytes() == b"the model shipped before"
    assert not (assets / SHIPPED_MODEL_CARD).exists()
    monkeypatch.setattr(ship, "MAX_BYTES", 10**9)
    assert ship.main(args) == 0
    meta = {p.key: p.value for p in onnx.load(str(assets / ship.SHIPPED_MODEL)).metadata_props}
    card = (assets / SHIPPED_MODEL_CARD).read_text()
    assert str(prepared) not in json.dumps(meta) + card and str(tmp_path) not in json.dumps(meta) + card  # no machine paths
    assert json.loads(meta["gliomaseg"])["train_csv"] == "data_train.csv"
    assert "`data_val.csv`" in card and card.endswith("the commands\n")
    # The card leads with the cross-validation: pooled mean/median, folds, the failure B (15 tumour slices, 0.2).
    cv = json.loads(meta["model_card"])["cross_validation"]
    assert (cv["mean"], cv["median"], cv["patients"], cv["folds"]) == (0.65, 0.75, 4, 2)
    assert cv["fold_means"] == {"fold0": 0.55, "fold1": 0.75} and [r["patient"] for r in cv["low"]] == ["B"]
    assert cv["missing_sequence"] == {"patients": 1, "mean": 0.8, "others_mean": 0.6}
    assert card.index("## What to expect on new patients") < card.index("## Intended use")
    assert "**Mean per-patient Dice 0.650, median 0.750** over 4 patients" in card
    assert torch.load(run / "best.ckpt", weights_only=True)["model_card"]["cross_validation"] == cv  # the run says the same
    # The int8 variant beside it, made from this fp32 file and checked against it.
    from gliomaseg.inference.variants import check_problem, variant_path

    int8 = variant_path(assets / ship.SHIPPED_MODEL)
    assert int8.is_file() and check_problem(assets / ship.SHIPPED_MODEL, int8) is None
    from gliomaseg.predict.report import model_summary

    summary = model_summary(OnnxPredictor(assets / ship.SHIPPED_MODEL, micro_batch=1))
    assert summary["validation"].startswith("cross-validated mean per-patient Dice 0.65 (median 0.75; folds 0.55 to 0.75)")
