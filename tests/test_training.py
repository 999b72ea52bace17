from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from gliomaseg.cli import main
from gliomaseg.core.errors import ConfigError, TrainingDivergedError
from gliomaseg.evaluation.evaluate import evaluate
from gliomaseg.evaluation.metrics import dice, iou
from gliomaseg.evaluation.scorer import PatientScorer
from gliomaseg.training.config import TrainConfig
from gliomaseg.training.records import read_metrics
from gliomaseg.training.run import train
from gliomaseg.training.task import SegmentationTask


def _config(prepared: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(out=str(out), data=str(prepared), epochs=1, batch_size=4, image_size=64, workers=0, progress=False,
                  lr=0.05, scheduler="none")
    values.update(overrides)
    return TrainConfig(**values)


def test_run_folder_and_checkpoint_contents(trained_run: Path, prepared: Path):
    for name in ("best.ckpt", "last.ckpt", "config.json", "summary.json", "logs/version_0/metrics.csv"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "tensorboard").glob("version_0/events.out.tfevents*"))
    checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    h = checkpoint["hyper_parameters"]
    assert (h["arch"], h["encoder"], h["image_size"]) == ("Unet", "resnet18", 64)
    assert h["mean"] == pytest.approx([0.485, 0.456, 0.406]) and h["val_csv"].endswith("data_val.csv")
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["train_images_per_second"] > 0
    assert summary["model_selection_csv"].endswith("data_val.csv")


def test_training_lowers_the_loss(prepared: Path, tmp_path: Path):
    train(_config(prepared, tmp_path, epochs=4, loss="dice+bce", lr=0.02, scheduler="none", augment=False, seed=1,
                  limit_train_batches=4))
    metrics = read_metrics(tmp_path)
    losses = metrics["train_loss_epoch"].dropna().tolist()
    assert len(losses) == 4
    assert losses[-1] < losses[0]


def _train_minutes(checkpoint: dict) -> float:
    return next(state["train_minutes"] for key, state in checkpoint["callbacks"].items() if "Throughput" in key)


def test_resume_continues_at_saved_epoch(prepared: Path, tmp_path: Path, capsys):
    train(_config(prepared, tmp_path, epochs=1))
    first = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert first["epoch"] == 0
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(prepared, tmp_path, epochs=2))
    result = train(_config(prepared, tmp_path, epochs=2, resume=True))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and result.summary["epochs_completed"] == 2
    assert result.summary["resumed_from"].endswith("last.ckpt")
    metrics = read_metrics(tmp_path)
    assert metrics["epoch"].dropna().unique().tolist() == [0, 1]  # the first session's log survives the resume
    minutes = metrics.dropna(subset=["train_minutes"]).groupby("epoch")["train_minutes"].last()
    # Training minutes go on counting across the resume (the checkpoint carries them), not from 0.
    assert minutes[0] == pytest.approx(_train_minutes(first), rel=1e-3)
    assert minutes[1] == pytest.approx(_train_minutes(checkpoint), rel=1e-3) and minutes[1] > minutes[0] > 0
    speed = result.summary["train_images_per_second"]
    assert speed > 0
    done = train(_config(prepared, tmp_path, epochs=2, resume=True))  # nothing left to train
    assert done.summary["train_images_this_session"] == 0 and done.summary["train_images_per_second"] == speed
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path), "--epochs", "2", "--batch-size", "4", "--image-size", "64",
                 "--workers", "0", "--no-progress", "--scheduler", "none", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "had no epochs left to train" in printed and "nan" not in printed
    assert "resuming with the run's own lr=0.05" in printed  # left out on the command line: taken from config.json


def test_restart_after_a_kill_before_last_ckpt_keeps_one_best(prepared: Path, tmp_path: Path):
    # A session killed after writing best.ckpt but before its first last.ckpt starts again from scratch.
    train(_config(prepared, tmp_path, epochs=1))
    (tmp_path / "last.ckpt").unlink()
    stale = torch.load(tmp_path / "best.ckpt", weights_only=True)
    stale["epoch"] = 41  # marks the killed session's file
    torch.save(stale, tmp_path / "best.ckpt")
    result = train(_config(prepared, tmp_path, epochs=1, resume=True))
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    assert torch.load(result.best_checkpoint, weights_only=True)["epoch"] == 0


def test_training_minutes_carry_over_a_resume(monkeypatch):
    from gliomaseg.training.callbacks import Throughput

    clock = iter([0.0, 30.0, 90.0])
    monkeypatch.setattr("gliomaseg.training.callbacks.time.perf_counter", lambda: next(clock))
    first = Throughput()
    first.on_train_epoch_start(None, None)
    first.on_train_batch_end(None, None, None, (torch.zeros(4),), 0)  # 30 s
    first.on_train_batch_end(None, None, None, (torch.zeros(4),), 1)  # 60 s more
    assert first.state_dict() == {"train_minutes": 1.5} and first.images == 8
    resumed = Throughput()
    resumed.load_state_dict(first.state_dict())
    assert resumed.minutes == 1.5 and resumed.images == 0  # the new session's speed starts afresh, the minutes do not


def test_steady_throughput_leaves_out_the_first_batch(monkeypatch):
    from gliomaseg.training.callbacks import Throughput

    clock = iter([0.0, 10.0, 12.0, 14.0])
    monkeypatch.setattr("gliomaseg.training.callbacks.time.perf_counter", lambda: next(clock))
    speed = Throughput()
    speed.on_train_epoch_start(None, None)
    speed.on_train_batch_end(None, None, None, (torch.zeros(4),), 0)  # 10 s: start-up costs
    assert math.isnan(speed.steady_images_per_second)
    speed.on_train_batch_end(None, None, None, (torch.zeros(4),), 1)  # 2 s
    speed.on_train_batch_end(None, None, None, (torch.zeros(4),), 2)  # 2 s
    assert speed.images_per_second == pytest.approx(12 / 14) and speed.steady_images_per_second == pytest.approx(2.0)


def test_lowlr_parameter_groups():
    task = SegmentationTask(lr=0.01, lowlr=True, scheduler="none")
    optimizer = task.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(0.001) and groups["decoder"]["lr"] == pytest.approx(0.01)
    encoder_ids = {id(p) for p in task.model.encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == encoder_ids
    assert not encoder_ids & {id(p) for p in groups["decoder"]["params"]}
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in task.model.parameters())
    assert len(SegmentationTask(lowlr=False, scheduler="none").configure_optimizers().param_groups) == 1


def test_bf16_mixed_on_cpu(prepared: Path, tmp_path: Path):
    result = train(_config(prepared, tmp_path, precision="bf16-mixed", limit_train_batches=2))
    assert result.summary["epochs_completed"] == 1 and (tmp_path / "best.ckpt").is_file()


def test_nan_loss_stops_with_message_and_keeps_last_good(prepared: Path, tmp_path: Path, monkeypatch):
    train(_config(prepared, tmp_path, epochs=1))
    good = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]

    class NanLoss(torch.nn.Module):
        def forward(self, logits, masks):
            return (logits * float("nan")).mean()

    monkeypatch.setattr("gliomaseg.training.task.build_loss", lambda spec: NanLoss())
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        train(_config(prepared, tmp_path, epochs=2, resume=True))
    kept = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(kept[k], good[k]) for k in good)


def test_bad_options_are_clear(prepared: Path, tmp_path: Path, capsys):
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--model", "unet9"]) == 2
    assert "unknown architecture 'unet9'" in capsys.readouterr().err
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--loss", "dice+foo"]) == 2
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--image-size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), "--epochs", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_and_val_must_not_overlap(prepared: Path, tmp_path: Path):
    from gliomaseg.core.errors import DataError

    with pytest.raises(DataError, match="also in"):
        train(_config(prepared, tmp_path, val_csv=str(prepared / "data_train.csv")))


def test_evaluate_outputs_and_names_the_selection_csv(trained_run: Path, prepared: Path, tmp_path: Path):
    summary = evaluate(trained_run / "best.ckpt", prepared / "data_val.csv", tmp_path)
    for name in ("slices.csv", "patients.csv", "summary.json", "summary.md", "patient_dice.png"):
        assert (tmp_path / name).is_file()
    slices = pd.read_csv(tmp_path / "slices.csv")
    assert len(slices) == len(pd.read_csv(prepared / "data_val.csv"))
    assert summary["held_out"] is False
    markdown = (tmp_path / "summary.md").read_text()
    assert "these are validation scores" in markdown and "micro-imagewise" in markdown
    assert {"none", "tta:flip", "post:all", "post:largest_3d"} <= set(summary["variants"])
    assert summary["iou_imagewise"] == pytest.approx(slices["iou"].mean())


class _Oracle:
    """A predictor that returns the true mask (at its own ``image_size``): evaluation must then report 1 everywhere."""

    threshold = 0.5
    info = None

    def __init__(self, frame: pd.DataFrame, image_size: int = 256):
        import cv2
        import numpy as np

        from gliomaseg.data.files import read_image, read_mask

        self.image_size = image_size
        self.truth = {}
        for r in frame.itertuples():
            image, mask = read_image(r.image_path), read_mask(r.mask_path).astype("float32")
            if image_size != image.shape[0]:  # what predict_probabilities sends: the image resized with INTER_AREA
                image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
                mask = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_AREA)
            for axis in (None, 0, 1):  # also the flipped copies that flip-TTA sends
                im, m = (image, mask) if axis is None else (np.flip(image, axis), np.flip(mask, axis))
                self.truth[np.ascontiguousarray(im).tobytes()] = np.ascontiguousarray(m)

    def probabilities(self, images):
        import numpy as np

        return np.stack([self.truth[im.tobytes()] for im in images])


class _Nothing(_Oracle):
    """A predictor that never finds a tumour."""

    def probabilities(self, images):
        import numpy as np

        return np.zeros(images.shape[:3], np.float32)


def test_perfect_prediction_gives_one_everywhere(prepared: Path, tmp_path: Path):
    frame = pd.read_csv(prepared / "data_val.csv")
    summary = evaluate("oracle", prepared / "data_val.csv", tmp_path, predictor=_Oracle(frame))
    for key in ("iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "iou_micro", "dice_micro",
                "patient_dice_mean", "patient_dice_median"):
        assert summary[key] == 1.0, key
    assert summary["patient_hd95_mean"] == 0.0 and summary["patients_missed_tumour"] == summary["patients_false_tumour"] == 0
    for variant in ("none", "tta:flip", "post:largest_3d"):  # other post-processing may change a perfect mask's edges
        assert all(v == 1.0 for v in summary["variants"][variant].values()), variant


def test_oracle_at_128_px_scores_the_resize_path(prepared: Path, tmp_path: Path):
    frame = pd.read_csv(prepared / "data_val.csv")
    summary = evaluate("oracle", prepared / "data_val.csv", tmp_path, predictor=_Oracle(frame, 128), compare=False)
    slices = pd.read_csv(tmp_path / "slices.csv")
    assert (slices[["tp", "fp", "fn", "tn"]].sum(axis=1) == 256 * 256).all()  # scored at the masks' own size
    assert 0.9 < summary["dice_micro"] < 1.0 and 0.9 < summary["iou_imagewise_tumour_slices"] < 1.0  # lossy, not wrong
    assert summary["patient_hd95_mean"] <= 2.0 and summary["patients_missed_tumour"] == 0


def test_3d_numbers_do_not_depend_on_csv_row_order(prepared: Path, tmp_path: Path):
    frame = pd.read_csv(prepared / "data_val.csv")
    shuffled = frame.sample(frac=1.0, random_state=1)
    assert shuffled["slice"].tolist() != frame["slice"].tolist()
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    summary = evaluate("oracle", tmp_path / "shuffled.csv", tmp_path / "eval", predictor=_Oracle(frame))
    assert summary["volumes"] is True and summary["patient_hd95_mean"] == 0.0
    assert summary["variants"]["post:largest_3d"]["patient_dice_mean"] == 1.0
    assert pd.read_csv(tmp_path / "eval" / "slices.csv").groupby("patient", sort=False)["slice"].apply(
        lambda s: s.is_monotonic_increasing).all()


def test_image_split_is_not_stacked_into_volumes(prepared: Path, tmp_path: Path):
    frame = pd.read_csv(prepared / "data_val.csv")
    frame[frame["slice"] % 2 == 0].to_csv(tmp_path / "every_other.csv", index=False)
    summary = evaluate("oracle", tmp_path / "every_other.csv", tmp_path / "eval", predictor=_Oracle(frame))
    assert summary["volumes"] is False and summary["patient_hd95_mean"] is None
    assert "post:largest_3d" not in summary["variants"] and summary["iou_micro"] == 1.0
    assert "not whole volumes" in (tmp_path / "eval" / "summary.md").read_text()


def test_missed_tumours_score_the_worst_case_hd95(prepared: Path, tmp_path: Path):
    frame = pd.read_csv(prepared / "data_val.csv")
    summary = evaluate("nothing", prepared / "data_val.csv", tmp_path, predictor=_Nothing(frame), compare=False)
    with_tumour = frame.groupby("patient")["diagnosis"].max()
    assert summary["patients_missed_tumour"] == int(with_tumour.sum()) > 0 and summary["patients_false_tumour"] == 0
    sizes = frame.groupby("patient").size()[with_tumour > 0]
    diagonals = [(n ** 2 + 2 * 256 ** 2) ** 0.5 for n in sizes]
    assert summary["patient_hd95_mean"] == pytest.approx(sum(diagonals) / len(diagonals))
    assert summary["hd95_unit"].startswith("pixels")
    spaced = evaluate("nothing", prepared / "data_val.csv", tmp_path / "mm", predictor=_Nothing(frame), compare=False,
                      spacing=(0.5, 0.5, 3.0))  # x, y, z: 0.5 mm pixels, 3 mm slices
    assert spaced["hd95_unit"].startswith("mm")
    assert spaced["patient_hd95_mean"] == pytest.approx(sum((9 * n ** 2 + 2 * 128 ** 2) ** 0.5 for n in sizes) / len(sizes))


def test_held_out_is_decided_from_the_slices(trained_run: Path, prepared: Path, tmp_path: Path):
    for name in ("data_train.csv", "data_info.csv"):
        summary = evaluate(trained_run / "best.ckpt", prepared / name, tmp_path / name, compare=False)
        assert summary["held_out"] is False, name
        assert summary["overlap"]["training"]["slices"] == len(pd.read_csv(prepared / "data_train.csv"))
    assert summary["overlap"]["model_selection"]["slices"] == len(pd.read_csv(prepared / "data_val.csv"))
    assert "of these slices" in (tmp_path / name / "summary.md").read_text()
    # A checkpoint picked on one validation patient, evaluated on the other: held out.
    val = pd.read_csv(prepared / "data_val.csv")
    first, second = sorted(val["patient"].unique())[:2]
    val[val["patient"] == first].to_csv(tmp_path / "pick.csv", index=False)
    val[val["patient"] == second].to_csv(tmp_path / "test.csv", index=False)
    checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["val_csv"] = str(tmp_path / "pick.csv")
    torch.save(checkpoint, tmp_path / "picked.ckpt")
    summary = evaluate(tmp_path / "picked.ckpt", tmp_path / "test.csv", tmp_path / "held", compare=False)
    assert summary["held_out"] is True and summary["overlap"]["model_selection"] == {
        "csv": "pick.csv", "slices": 0, "patients": 0}  # by name: outputs name no folder of the machine (issue 22)


def test_csv_names_resolve_inside_the_data_folder(prepared: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(prepared, tmp_path, train_csv="data_val.csv", val_csv="data_train.csv")
    assert config.csv_paths() == (prepared / "data_val.csv", prepared / "data_train.csv")
    assert _config(prepared, tmp_path).csv_paths() == (prepared / "data_train.csv", prepared / "data_val.csv")
    with pytest.raises(ConfigError, match="give --data"):
        TrainConfig(out=str(tmp_path)).csv_paths()


def test_lowlr_logs_both_learning_rates(prepared: Path, tmp_path: Path):
    train(_config(prepared, tmp_path, lowlr=True, lr=0.01, limit_train_batches=1))
    metrics = read_metrics(tmp_path)
    encoder = metrics["lr-SGD/encoder"].dropna().iloc[0]
    decoder = metrics["lr-SGD/decoder"].dropna().iloc[0]
    assert encoder == pytest.approx(0.001) and decoder == pytest.approx(0.01)


def test_best_checkpoint_is_picked_on_the_per_patient_dice_that_evaluate_reports(trained_run: Path, prepared: Path, tmp_path: Path):
    """Training at 64 px validates at the masks' own 256 px, as evaluate does, and picks on that number."""
    metrics = read_metrics(trained_run)
    curve = metrics.dropna(subset=["val_patient_dice"])
    assert {"val_iou_imagewise", "val_iou_tumour_slices", "val_patient_dice_median", "train_minutes"} <= set(metrics.columns)
    best_epoch = int(curve.loc[curve["val_patient_dice"].idxmax(), "epoch"])
    assert torch.load(trained_run / "best.ckpt", weights_only=True)["epoch"] == best_epoch
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["best_val_patient_dice"] == pytest.approx(curve["val_patient_dice"].max())
    report = evaluate(trained_run / "best.ckpt", prepared / "data_val.csv", tmp_path / "eval", compare=False, tta="none")
    assert report["patient_dice_mean"] == pytest.approx(summary["best_val_patient_dice"], abs=2e-3)
    assert 0 < report["patient_dice_mean"] < 1  # a real, non-trivial number, so the agreement means something


def test_validation_scores_an_all_empty_set_as_metrics_and_evaluate_do():
    """No tumour in truth and none predicted: training's validation IoU and Dice (micro and per patient) are
    metrics.iou / metrics.dice of the counts, 1, the score evaluate gives the same slices."""
    task = SegmentationTask()
    task.val_patients = ["a", "a", "b"]
    logged = {}
    task.all_gather = lambda tensor: tensor
    task.log_dict = lambda values, **_: logged.update(values)
    # dataset index, tp, fp, fn, tn per slice: nothing to find, nothing found
    task._val_stats = [torch.tensor([[0, 0, 0, 0, 64], [1, 0, 0, 0, 64], [2, 0, 0, 0, 64]])]
    task.on_validation_epoch_end()
    assert logged["val_iou_micro"] == iou(0, 0, 0) == 1.0
    assert logged["val_dice_micro"] == dice(0, 0, 0) == 1.0
    slices, patients, report = PatientScorer().extend([("a", 0, 0, 0, 64), ("a", 0, 0, 0, 64), ("b", 0, 0, 0, 64)]).report(with_smp=False)
    assert logged["val_iou_micro"] == report["iou_micro"] and logged["val_dice_micro"] == report["dice_micro"]
    assert logged["val_patient_dice"] == report["patient_dice_mean"] == 1.0
    assert logged["val_iou_imagewise"] == report["iou_imagewise"] == 1.0
    assert math.isnan(logged["val_iou_tumour_slices"])


def test_tumour_oversampling_draws_tumour_slices_more_often(prepared: Path):
    from gliomaseg.training.loaders import tumour_sampler

    frame = pd.read_csv(prepared / "data_train.csv")
    assert tumour_sampler(frame, 1.0, seed=0) is None
    drawn = list(tumour_sampler(frame, 4.0, seed=0)) + list(tumour_sampler(frame, 4.0, seed=1))
    share = frame["diagnosis"].to_numpy()[drawn].mean()
    base = frame["diagnosis"].mean()
    expected = 4 * base / (4 * base + (1 - base))
    assert base < 0.9 and share > base + 0.1 and share == pytest.approx(expected, abs=0.15)
    with pytest.raises(ConfigError, match="oversample"):
        TrainConfig(out="x", data=str(prepared), oversample=0.5).validate()


def test_train_options_come_from_trainconfig(tmp_path: Path):
    import argparse
    from dataclasses import dataclass, field

    from gliomaseg.cli import _add_dataclass_options, build_parser

    args = vars(build_parser("train").parse_args(["train", "--out", "r"]))
    args.pop("command")
    assert TrainConfig.from_dict(args) == TrainConfig(out="r")  # every default is TrainConfig's
    args = vars(build_parser("train").parse_args(["train", "--out", "r", "--no-cache", "--lowlr", "--limit-train-batches", "0.5"]))
    assert args["cache"] is False and args["lowlr"] is True and args["limit_train_batches"] == 0.5

    @dataclass
    class Later:  # a field added to the config becomes an option with its help, choices and default
        out: str = field(metadata={"help": "run folder"})
        oversample: float = field(default=0.3, metadata={"help": "fraction of tumour slices"})
        norm: str = field(default="bn", metadata={"choices": ("bn", "gn"), "help": "normalization layers"})
        ema: bool = field(default=False, metadata={"help": "keep an exponential moving average"})

    parser = argparse.ArgumentParser()
    _add_dataclass_options(parser, Later)
    assert vars(parser.parse_args(["--out", "x"])) == {"out": "x", "oversample": 0.3, "norm": "bn", "ema": False}
    assert "fraction of tumour slices" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--norm", "ln"])

    @dataclass
    class Unhelpful:  # and one without help is refused when the parser is built (issue 24: every option has help)
        out: str
        ema: bool = False

    with pytest.raises(TypeError, match="no metadata help"):
        _add_dataclass_options(argparse.ArgumentParser(), Unhelpful)


def test_run_folder_has_a_model_card_in_markdown_and_checkpoint(trained_run: Path):
    checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    card = checkpoint["model_card"]
    assert card["architecture"] == "Unet" and card["encoder"] == "resnet18" and card["threshold"] == 0.5
    assert card["preprocessing"]["image_size"] == 64 and card["versions"]["torch"] == torch.__version__
    assert card["training_data"]["split"].startswith("by patient")
    assert card["training_data"]["train"]["patients"] + card["training_data"]["model_selection"]["patients"] == 6
    assert card["encoder_weights"].startswith("none: the encoder was trained from scratch")
    assert "3D Dice" in card["validation"]["best_val_patient_dice"]["reduction"]
    markdown = (trained_run / "MODEL_CARD.md").read_text()
    assert "not for diagnosis" in markdown and "Unet-resnet18" in markdown
    assert f"{card['validation']['best_val_patient_dice']['value']:.4f}" in markdown


DRIVER = """
import sys
from gliomaseg.training import task as training
from gliomaseg.cli import main

validated = training.SegmentationTask.on_validation_epoch_end

def announce(self):
    validated(self)
    print(f"validated epoch {self.current_epoch}", flush=True)

training.SegmentationTask.on_validation_epoch_end = announce
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_loses_at_most_the_epoch_in_progress(small64: Path, tmp_path: Path):
    """SIGKILL a real training process at random points, resume, and end where an uninterrupted run ends."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run = tmp_path / "run"
    # Two kills, each after two validated epochs and a sleep of up to one more (which may finish and save a third):
    # at most 2 x 3 epochs done before the final resume, which still has at least one left.
    epochs = 7
    command = [sys.executable, str(driver), "train", "--data", str(small64), "--out", str(run), "--epochs", str(epochs),
               "--batch-size", "4", "--image-size", "64", "--workers", "0", "--no-progress", "--no-cache",
               "--optimizer", "sgd", "--lr", "1e-6", "--scheduler", "none", "--precision", "32", "--limit-train-batches", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
    rng = random.Random(os.getpid())
    for kill in range(2):
        session = subprocess.Popen(command + (["--resume"] if kill else []), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True, env=env)
        seen, times = [], []
        for line in session.stdout:
            if line.startswith("validated epoch"):
                seen.append(int(line.split()[-1]))
                times.append(time.perf_counter())
                if len(seen) == 2:  # two epochs validated in this session: kill at a random point of the next one
                    time.sleep(rng.uniform(0.0, 1.0) * (times[1] - times[0]))
                    session.send_signal(signal.SIGKILL)
        session.wait(timeout=60)
        assert session.returncode == -signal.SIGKILL, "the session ended before it could be killed"
        saved = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
        # Epoch seen[-1] was validated before the kill; its checkpoint may still have been in progress.
        assert saved in (seen[-1] - 1, seen[-1]), f"killed after epoch {seen[-1]} was validated, last.ckpt holds epoch {saved}"
        if kill:
            assert seen[0] == previous_saved + 1, f"resumed at epoch {seen[0]}, last.ckpt held {previous_saved}"
        previous_saved = saved
    final = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    resumed = [int(line.split()[-1]) for line in final.stdout.splitlines() if line.startswith("validated epoch")]
    assert resumed and resumed[0] == previous_saved + 1 and resumed[-1] == epochs - 1
    checkpoint = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == epochs - 1 and checkpoint["global_step"] == epochs * 2  # as uninterrupted: 2 steps an epoch
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == epochs


def test_ddp_on_two_cpu_processes_matches_single_process_evaluation(small64: Path, tmp_path: Path):
    """--devices 2 --strategy ddp (gloo): validation numbers equal evaluate() on the same checkpoint and CSV."""
    import os
    import subprocess
    import sys

    val = pd.read_csv(small64 / "data_val.csv")
    val = val if len(val) % 2 else val.iloc[1:]  # an odd count: DistributedSampler pads it with a repeated slice
    val.to_csv(tmp_path / "val.csv", index=False)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "gliomaseg", "train", "--train-csv", str(small64 / "data_train.csv"), "--val-csv",
               str(tmp_path / "val.csv"), "--out", str(run), "--epochs", "1", "--batch-size", "2", "--image-size", "64",
               "--workers", "0", "--no-progress", "--no-augment", "--scheduler", "none", "--lr", "0.05",
               "--precision", "32", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr and "All distributed processes registered" in done.stderr
    logged = read_metrics(run).dropna(subset=["val_iou_imagewise"]).iloc[-1]
    summary = evaluate(run / "last.ckpt", tmp_path / "val.csv", tmp_path / "eval", compare=False)
    assert summary["slices"] == len(val)
    for key in ("iou_imagewise", "dice_imagewise", "iou_micro", "dice_micro"):
        assert logged[f"val_{key}"] == pytest.approx(summary[key], abs=1e-4), key


def test_decoder_width_travels_with_the_model(prepared: Path, tmp_path: Path):
    """A lighter Unet decoder (issue 23): trained, stored in the checkpoint, rebuilt by predict, exported to ONNX."""
    from gliomaseg.core.errors import CheckpointError, ConfigError
    from gliomaseg.export.onnx import export_onnx
    from gliomaseg.inference.onnx_backend import OnnxPredictor
    from gliomaseg.inference.torch_backend import load_checkpoint
    from gliomaseg.modeling.spec import ModelInfo

    result = train(_config(prepared, tmp_path / "run", epochs=1, limit_train_batches=1, decoder_channels="32,16,8,8,4"))
    predictor = load_checkpoint(result.best_checkpoint)
    assert predictor.info.decoder_channels == [32, 16, 8, 8, 4]
    assert predictor.model.segmentation_head[0].in_channels == 4  # the last width feeds the head
    exported = export_onnx(result.best_checkpoint, tmp_path / "light.onnx")
    onnx_predictor = OnnxPredictor(exported["path"])
    assert onnx_predictor.info.decoder_channels == [32, 16, 8, 8, 4]
    assert exported["card"]["decoder_channels"] == [32, 16, 8, 8, 4]
    with pytest.raises(ConfigError, match="3 to 5"):
        _config(prepared, tmp_path / "bad", decoder_channels="8,8").validate()
    with pytest.raises(ConfigError, match="not FPN"):
        _config(prepared, tmp_path / "bad", model="fpn", decoder_channels="64,32,16").validate()
    with pytest.raises(CheckpointError, match="decoder_channels"):
        ModelInfo.from_dict({**predictor.info.portable(), "decoder_channels": [0, 1]}, "m.onnx")


def test_no_validation_run_trains_every_patient_and_ships_its_last_epoch(prepared: Path, tmp_path: Path, capsys):
    # --val-csv none: the final model of a recipe whose length a cross-validation fixed, trained on all the data.
    every = tmp_path / "all.csv"
    pd.concat([pd.read_csv(prepared / "data_train.csv"), pd.read_csv(prepared / "data_val.csv")]).to_csv(every, index=False)
    run = tmp_path / "final"
    with pytest.raises(ConfigError, match="plateau"):
        train(_config(prepared, run, train_csv=str(every), val_csv="none", scheduler="plateau"))
    first = train(_config(prepared, run, train_csv=str(every), val_csv="none", epochs=2, max_time="00:00:00:00",
                          limit_train_batches=1))
    assert first.summary["model_checkpoint"] is None and not (run / "final.ckpt").exists()  # unfinished: no model yet
    assert main(["train", "--train-csv", str(every), "--val-csv", "none", "--out", str(run), "--epochs", "2",
                 "--batch-size", "4", "--image-size", "64", "--workers", "0", "--no-progress", "--scheduler", "cosine",
                 "--limit-train-batches", "3", "--resume"]) == 0
    assert "no validation (--val-csv none)" in capsys.readouterr().out
    # no best.ckpt (nothing was picked), and no checkpoint Lightning would add on its own in a subfolder
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*.ckpt")) == ["final.ckpt", "last.ckpt"]
    final = torch.load(run / "final.ckpt", weights_only=True)
    last = torch.load(run / "last.ckpt", weights_only=True)
    assert "optimizer_states" not in final and "optimizer_states" in last
    assert final["epoch"] == last["epoch"] == 1 and final["hyper_parameters"]["val_csv"] is None
    assert all(torch.equal(final["state_dict"][k], v) for k, v in last["state_dict"].items())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_selection_csv"] is None and summary["best_val_patient_dice"] is None
    assert summary["model_checkpoint"].endswith("final.ckpt") and "no pick" in summary["note"]
    assert not [c for c in read_metrics(run).columns if c.startswith("val_")]  # no validation ran
    card = final["model_card"]
    assert card["training_data"]["train"]["patients"] == pd.read_csv(every)["patient"].nunique()
    assert "no validation" in card["training_data"]["split"]
    text = (run / "MODEL_CARD.md").read_text()
    assert "no pick" in text and "nothing was picked" in text
    assert "best_val_patient_dice" not in text and "was picked on this number" not in text and "validation" not in card["validation"]
    evaluated = evaluate(run / "final.ckpt", prepared / "data_val.csv", tmp_path / "eval")  # it is a model like any other
    assert 0 <= evaluated["patient_dice_mean"] <= 1 and evaluated["held_out"] is False


def test_a_final_model_is_whole_epochs_and_never_stale(prepared: Path, tmp_path: Path, monkeypatch):
    from lightning.pytorch.callbacks import Timer

    from gliomaseg.modeling.card import write_run_card

    every = tmp_path / "all.csv"
    pd.concat([pd.read_csv(prepared / "data_train.csv"), pd.read_csv(prepared / "data_val.csv")]).to_csv(every, index=False)
    run = tmp_path / "final"
    options = dict(train_csv=str(every), val_csv="none", limit_train_batches=2)
    train(_config(prepared, run, epochs=2, **options))
    write_run_card(run, "final.ckpt", cross_validation={"experiment": "cv", "folds": 2, "patients": 4, "reduction": "r",
                                                         "mean": 0.7, "median": 0.8, "fold_means": {"fold0": 0.7},
                                                         "worst": [], "low": [], "low_rule": "rule"})
    again = train(_config(prepared, run, epochs=2, resume=True, **options))  # nothing left: the final model and its card stay
    assert again.summary["train_images_this_session"] == 0
    assert torch.load(run / "final.ckpt", weights_only=True)["model_card"]["cross_validation"]["mean"] == 0.7
    # Trained on past it (a larger --epochs) and stopped by --max-time after one more epoch: the old final.ckpt
    # is stale and goes; the stop comes at the end of a whole epoch.
    # The limit is reached during this session's first epoch (Lightning also checks it as fit starts: skipped here).
    monkeypatch.setattr(Timer, "on_fit_start", lambda *args, **kwargs: None)
    stopped = train(_config(prepared, run, epochs=4, resume=True, max_time="00:00:00:00", **options))
    monkeypatch.undo()
    assert not (run / "final.ckpt").exists() and stopped.summary["stopped_by"] == "max_time"
    assert stopped.summary["model_checkpoint"] is None
    last = torch.load(run / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * 2  # three whole epochs of 2 steps
    with pytest.raises(ConfigError, match="trained without validation"):  # no best.ckpt beside final.ckpt
        train(_config(prepared, run, epochs=4, resume=True, limit_train_batches=2))
    done = train(_config(prepared, run, epochs=4, resume=True, **options))
    final = torch.load(run / "final.ckpt", weights_only=True)
    assert final["epoch"] == 3 and final["global_step"] == 4 * 2 and done.summary["stopped_by"] == "epochs"


def test_a_resume_with_another_recipe_is_refused_naming_the_options(prepared: Path, tmp_path: Path):
    """Only how a session runs on its machine (workers, precision, memory layout, devices...) may change on a resume;
    another model or recipe would mix two runs in one folder (or fail on weights of another shape). Spellings of the
    same thing ('Unet' for 'unet', 'none' for no weights) are the same run."""
    train(_config(prepared, tmp_path, epochs=1, limit_train_batches=2, scheduler="cosine"))
    with pytest.raises(ConfigError, match=r"started with other options \(decoder_channels None then, "
                                          r"'64,32,16,8,8' now; lr 0\.05 then, 0\.01 now\)"):
        train(_config(prepared, tmp_path, epochs=1, resume=True, lr=0.01, decoder_channels="64,32,16,8,8", scheduler="cosine"))
    # under the cosine schedule the epochs are the recipe: its curve spans the epochs the run started with
    with pytest.raises(ConfigError, match=r"epochs 1 then, 2 now\) \(the cosine schedule spans"):
        train(_config(prepared, tmp_path, epochs=2, resume=True, scheduler="cosine"))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 0  # nothing trained on
    resumed = train(_config(prepared, tmp_path, epochs=1, resume=True, scheduler="cosine", model="Unet", encoder_weights="none",
                            workers=1, precision="32", channels_last=False, limit_train_batches=2))
    assert resumed.summary["epochs_completed"] == 1 and resumed.summary["train_images_this_session"] == 0


def test_a_resume_refuses_a_run_whose_config_or_data_it_cannot_match(prepared: Path, tmp_path: Path):
    """Without a readable config.json a resume could not tell another recipe from the run's own; on another split
    with the same CSV names it would pick its best epoch on patients it may have trained on: both refused, named."""
    import shutil

    run = tmp_path / "run"
    train(_config(prepared, run, epochs=1, limit_train_batches=2))
    record = json.loads((run / "data.json").read_text())
    assert record["train"]["csv"] == "data_train.csv" and record["val"]["patients"] >= 1
    config = run / "config.json"
    text = config.read_text()
    for broken, problem in ((text[:-20], "is not a readable JSON object"), (None, "is missing"),
                            (json.dumps({**json.loads(text), "train_csv": 3}), "its options cannot be read as a run's")):
        if broken is None:
            config.unlink()
        else:
            config.write_text(broken)
        with pytest.raises(ConfigError, match=rf"config\.json: {problem}"):
            train(_config(prepared, run, epochs=2, resume=True, limit_train_batches=2))
        assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 0  # nothing trained on
    config.write_text(text)
    for broken in ("null", "[1, 2]", "{"):
        (run / "data.json").write_text(broken)
        with pytest.raises(ConfigError, match=r"data\.json: not a readable JSON object"):
            train(_config(prepared, run, epochs=2, resume=True, limit_train_batches=2))
    (run / "data.json").write_text(json.dumps({**record, "train": {**record["train"], "patients": 999, "added": 1}}))
    train(_config(prepared, run, epochs=1, resume=True, limit_train_batches=2))  # fields beside the identity: fine
    (run / "data.json").write_text(json.dumps(record))

    other = tmp_path / "other_split"  # the same file names, other patients in each set
    shutil.copytree(prepared, other)
    train_frame, val_frame = pd.read_csv(other / "data_train.csv"), pd.read_csv(other / "data_val.csv")
    moved = val_frame["patient"].iloc[0]
    pd.concat([train_frame, val_frame[val_frame["patient"] == moved]]).to_csv(other / "data_train.csv", index=False)
    val_frame[val_frame["patient"] != moved].to_csv(other / "data_val.csv", index=False)
    with pytest.raises(ConfigError, match=r"data\.json: the run was started on other slices \(train data_train\.csv: "
                                          r"\d+ patients, \d+ slices, digest \w+ then, data_train\.csv: \d+ patients.*; val "):
        train(_config(other, run, epochs=2, resume=True, limit_train_batches=2))
    assert json.loads((run / "data.json").read_text()) == record  # the run's record is left as it was
    moved_data = tmp_path / "moved"  # the same data in another folder resumes
    shutil.copytree(prepared, moved_data)
    resumed = train(_config(moved_data, run, epochs=2, resume=True, limit_train_batches=2))
    assert resumed.summary["epochs_completed"] == 2


def test_distillation_learns_the_teachers_probabilities_and_keeps_it_out_of_the_model(prepared: Path, trained_run: Path,
                                                                                       tmp_path: Path):
    """--distill-from: loss = the loss against the truth + w x BCE(model, teacher's probabilities) on the same batch;
    the teacher is neither trained nor saved with the model; a teacher that reads slices another way is refused."""
    import torch.nn.functional as F

    from gliomaseg.modeling.card import card_fields
    from gliomaseg.modeling.spec import load_checkpoint_file
    from gliomaseg.training.task import SegmentationTask, load_teacher

    teacher_path = trained_run / "best.ckpt"
    run = tmp_path / "student"
    student = {"distill_weight": 2.0, "decoder_channels": "64,32,16,8,8"}
    result = train(_config(prepared, run, epochs=1, limit_train_batches=2, distill_from=str(teacher_path), **student))
    logged = read_metrics(run).dropna(subset=["train_distill_loss"])
    assert len(logged) == 1 and 0 < logged["train_distill_loss"].iloc[0] < 10
    checkpoint = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    plain = torch.load(trained_run / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])
    shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    assert shapes == {k: tuple(v.shape) for k, v in SegmentationTask(decoder_channels=[64, 32, 16, 8, 8]).state_dict().items()}
    assert shapes != {k: tuple(v.shape) for k, v in plain["state_dict"].items()}  # the student's own decoder, not the teacher's
    h = checkpoint["hyper_parameters"]
    assert (h["distill_from"], h["distill_weight"]) == (str(teacher_path), 2.0)
    card = card_fields(load_checkpoint_file(result.last_checkpoint)[1], h)
    assert (card["training"]["distilled_from"], card["training"]["distill_weight"]) == ("best.ckpt", 2.0)

    # the formula, on one batch, and its gradient (a term on detached logits would leave the model untaught)
    task = SegmentationTask(**{k: v for k, v in h.items() if k in SegmentationTask.__init__.__code__.co_varnames})
    task._teacher.append(load_teacher(teacher_path, h))
    assert not task._teacher[0].training and not any(p.requires_grad for p in task._teacher[0].parameters())
    images, masks = torch.rand(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.8).float()
    task.eval()  # no dropout or batch-norm updates between the passes
    weight = task.model.segmentation_head[0].weight
    loss = task.training_step((images, masks), 0)
    (grad,) = torch.autograd.grad(loss, weight)
    logits = task(images)
    expected = task.loss_fn(logits, masks) + 2.0 * F.binary_cross_entropy_with_logits(
        logits, torch.sigmoid(task._teacher[0](images)).detach())
    (expected_grad,) = torch.autograd.grad(expected, weight)
    (truth_grad,) = torch.autograd.grad(task.loss_fn(task(images), masks), weight)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-7) and not torch.allclose(grad, truth_grad, rtol=1e-3)

    # a resume keeps its teacher: the same weights resume, other weights under the same name are refused
    other = tmp_path / "elsewhere" / "best.ckpt"
    other.parent.mkdir()
    changed = torch.load(teacher_path, map_location="cpu", weights_only=True)
    changed["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in changed["state_dict"].items()}
    torch.save(changed, other)
    with pytest.raises(ConfigError, match=r"data\.json: the run was started with another --distill-from teacher "
                                          r"\(best\.ckpt \(weights \w+\) then, best\.ckpt \(weights \w+\) now\)"):
        train(_config(prepared, run, epochs=2, resume=True, limit_train_batches=2, distill_from=str(other), **student))
    resumed = train(_config(prepared, run, epochs=2, resume=True, limit_train_batches=2, distill_from=str(teacher_path),
                            **student))
    assert resumed.summary["epochs_completed"] == 2
    assert read_metrics(run).dropna(subset=["train_distill_loss"])["epoch"].tolist() == [0, 1]  # taught again

    # teachers refused before anything trains, each naming the file and why
    plain = torch.load(teacher_path, map_location="cpu", weights_only=True)
    cases = {
        "teacher128.ckpt": ({"image_size": 128}, r"image size 128 \(teacher\) against 64"),
        "standardized.ckpt": ({"intensity": "patient"}, r"intensity patient \(teacher\) against fixed"),
        "last.ckpt": ({"epochs": 5}, r"a run still in progress \(epoch 2 of 5\)"),
        "peeked.ckpt": ({"train_csv": str(prepared / "data_val.csv")},
                        r"the teacher trained on \d+ of this run's validation patients"),
    }
    for name, (changes, words) in cases.items():
        bad = tmp_path / "teachers" / name
        bad.parent.mkdir(exist_ok=True)
        torch.save({**plain, "epoch": 1, "hyper_parameters": {**plain["hyper_parameters"], **changes}}, bad)
        with pytest.raises(ConfigError, match=rf"{name.replace('.', '[.]')}: .*{words}"):
            train(_config(prepared, tmp_path / "refused", epochs=1, limit_train_batches=2, distill_from=str(bad)))
        assert not (tmp_path / "refused" / "config.json").exists()  # refused before the run was begun
    with pytest.raises(ConfigError, match="distill-weight must be above 0"):
        _config(prepared, tmp_path / "bad", distill_weight=0.0).validate()
    with pytest.raises(ConfigError, match="none.ckpt: --distill-from checkpoint does not exist"):
        train(_config(prepared, tmp_path / "bad", distill_from=str(tmp_path / "none.ckpt")))


def test_resume_options_come_from_config_json_and_an_older_file_still_guards(tmp_path: Path, capsys):
    from gliomaseg.training.run import recipe_differences, resume_options, started_config

    started = {**TrainConfig(out=str(tmp_path), lr=0.05, epochs=8, scheduler="cosine", workers=3).__dict__, "retired_option": 1}
    (tmp_path / "config.json").write_text(json.dumps(started))
    assert started_config(tmp_path) is not None and capsys.readouterr().out == ""  # said once, by train's check
    earlier = started_config(tmp_path, note=True)
    assert "retired_option" not in earlier and "retired_option of an older gliomaseg left out" in capsys.readouterr().out
    current = TrainConfig(out=str(tmp_path), workers=0, lr=0.01).__dict__
    resumed = resume_options(tmp_path, current, given={"out", "resume", "workers"})
    # the recipe as it started (lr, epochs, scheduler); the machine's own options as this session has them
    assert (resumed["lr"], resumed["epochs"], resumed["scheduler"], resumed["workers"]) == (0.05, 8, "cosine", 0)
    assert recipe_differences(earlier, TrainConfig.from_dict(resumed)) == {}
    named = resume_options(tmp_path, current, given={"out", "resume", "lr"})
    assert recipe_differences(earlier, TrainConfig.from_dict(named)) == {"lr": (0.05, 0.01)}
