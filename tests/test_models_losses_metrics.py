from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision

from gliomaseg.core.errors import CheckpointError, ConfigError
from gliomaseg.evaluation import metrics
from gliomaseg.evaluation.metrics import REDUCTIONS, all_metrics, dice, hd95, iou, worst_case_distance
from gliomaseg.evaluation.scorer import SCORE_REDUCTIONS, PatientScorer, dataset_report, patient_table, slice_table
from gliomaseg.modeling.losses import LOSSES, build_loss, parse_loss
from gliomaseg.modeling.models import ARCHITECTURES, build_model, canonical_architecture, min_image_size


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_runs(arch: str):
    encoder = "tu-vit_tiny_patch16_224" if arch == "dpt" else "resnet18"
    model = build_model(arch, encoder).eval()
    size = max(64, min_image_size(arch))
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1, size, size)


def test_architecture_names_and_errors():
    assert canonical_architecture("UNETPP") == "UnetPlusPlus"
    assert canonical_architecture("deeplabv3p") == "DeepLabV3Plus"
    assert canonical_architecture("segformer") == "Segformer"
    with pytest.raises(ConfigError, match="unknown architecture 'unet3'.*Unet"):
        build_model("unet3")
    with pytest.raises(ConfigError, match="unknown encoder 'resnet19'.*resnet18"):
        build_model("unet", "resnet19")
    with pytest.raises(ConfigError, match="ViT encoder"):
        build_model("dpt", "resnet18")


def test_local_torchvision_weights_load_exactly(tmp_path, no_network, monkeypatch):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("unet", "resnet18", encoder_weights=str(path))
    assert torch.equal(model.encoder.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # found by encoder name in a weights folder, also when "imagenet" is asked for
    monkeypatch.setenv("GLIOMASEG_WEIGHTS_DIR", str(tmp_path))
    again = build_model("fpn", "resnet18", encoder_weights="imagenet")
    assert torch.equal(again.encoder.conv1.weight, reference.conv1.weight)


def test_local_safetensors_and_prefixed_weights(tmp_path, no_network):
    from safetensors.torch import save_file

    source = build_model("unet", "resnet34")
    state = {f"encoder.{k}": v.contiguous() for k, v in source.encoder.state_dict().items()}
    save_file(state, tmp_path / "resnet34.safetensors")
    model = build_model("linknet", "resnet34", weights_dir=tmp_path, encoder_weights="local")
    assert torch.equal(model.encoder.layer1[0].conv1.weight, source.encoder.layer1[0].conv1.weight)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit the encoder"):
        build_model("unet", "resnet18", encoder_weights=str(path))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable weight file"):
        build_model("unet", "resnet18", encoder_weights=str(bad))


# --- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_differentiable_and_lower_for_a_good_prediction(name: str):
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    good = (target * 2 - 1) * 6
    bad = -good
    loss = build_loss(name)
    logits = torch.zeros_like(target, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert loss(good, target) < loss(bad, target)


def test_weighted_sum_of_losses():
    assert parse_loss("0.5*dice+0.5*focal") == [(0.5, "dice"), (0.5, "focal")]
    assert parse_loss("dice+bce") == [(1.0, "dice"), (1.0, "bce")]
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    expected = 0.3 * build_loss("dice")(logits, target) + 0.7 * build_loss("bce")(logits, target)
    assert torch.isclose(build_loss("0.3*dice+0.7*bce")(logits, target), expected)
    assert torch.isclose(build_loss("ce")(logits, target), build_loss("bce")(logits, target), atol=1e-5)
    with pytest.raises(ConfigError, match="unknown loss term 'dise'"):
        build_loss("dise+bce")


# --- metrics -------------------------------------------------------------------------------------

def _counts():
    # slice 0: tp 6, fp 2, fn 2; slice 1: empty and predicted empty; slice 2: empty, 4 false positives
    tp, fp, fn = np.array([6, 0, 0]), np.array([2, 0, 4]), np.array([2, 0, 0])
    tn = 100 - tp - fp - fn
    return tp, fp, fn, tn


def test_all_negative_slice_by_reduction():
    tp, fp, fn, tn = _counts()
    scores = all_metrics(tp[:, None], fp[:, None], fn[:, None], tn[:, None])
    iou = scores["iou_score"]
    assert iou["micro"] == pytest.approx(6 / (6 + 6 + 2))  # the empty slices add nothing but fp
    assert iou["micro-imagewise"] == pytest.approx((0.6 + 1.0 + 0.0) / 3)  # empty-predicted-empty scores 1
    assert iou["macro"] == pytest.approx(iou["micro"]) and iou["weighted"] == pytest.approx(iou["micro"])
    assert set(scores) >= {"f1_score", "specificity", "negative_likelihood_ratio"} and len(scores) == 17
    assert all(set(v) == set(REDUCTIONS) for v in scores.values())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_metrics_agree_with_smp(reduction: str):
    torch.manual_seed(0)
    prediction = (torch.rand(5, 1, 16, 16) > 0.6).long()
    target = (torch.rand(5, 1, 16, 16) > 0.7).long()
    tp, fp, fn, tn = smp.metrics.get_stats(prediction, target, mode="binary")
    ours = all_metrics(tp.numpy(), fp.numpy(), fn.numpy(), tn.numpy())
    kwargs = {"class_weights": [1.0]} if "weighted" in reduction else {}
    for name in ("iou_score", "f1_score", "recall", "specificity"):
        expected = getattr(smp.metrics, name)(tp, fp, fn, tn, reduction=reduction, zero_division=1.0, **kwargs)
        assert ours[name][reduction] == pytest.approx(float(expected))


def test_dataset_report_hand_computed():
    tp, fp, fn, tn = _counts()
    slices = slice_table(pd.DataFrame({"patient": ["a", "a", "b"], "tp": tp, "fp": fp, "fn": fn, "tn": tn}))
    patients = patient_table(slices, {"a": 1.0, "b": 42.0})  # b: a false tumour, scored with a worst-case distance
    report = dataset_report(slices, patients)
    assert report["iou_imagewise"] == pytest.approx((0.6 + 1 + 0) / 3)
    assert report["dice_imagewise"] == pytest.approx((12 / 16 + 1 + 0) / 3)
    assert report["iou_imagewise_tumour_slices"] == pytest.approx(0.6)
    assert report["iou_micro"] == pytest.approx(6 / 14)
    assert report["dice_micro"] == pytest.approx(12 / 20)
    # patient a: one volume, Dice 12/16; patient b: nothing to find, 4 false positives -> 0
    assert patients.set_index("patient")["dice_3d"].to_dict() == pytest.approx({"a": 0.75, "b": 0.0})
    assert report["patient_dice_mean"] == pytest.approx(0.375)
    assert report["patient_hd95_mean"] == pytest.approx(21.5) and report["patient_hd95_undefined"] == 0
    assert (report["patients_false_tumour"], report["patients_missed_tumour"]) == (1, 0)
    assert report["iou_micro"] < iou(6, 0, 4)  # the 4 false positives on b's empty slice count
    assert report["empty_slices_predicted_empty"] == 1


def test_perfect_prediction_scores_one():
    slices = slice_table(pd.DataFrame({"patient": ["a", "a"], "tp": [5, 0], "fp": [0, 0], "fn": [0, 0], "tn": [95, 100]}))
    report = dataset_report(slices, patient_table(slices))
    for key in ("iou_imagewise", "dice_imagewise", "iou_micro", "dice_micro", "patient_dice_mean", "patient_dice_median"):
        assert report[key] == 1.0


def test_scorer_accumulates_what_the_tables_report():
    """PatientScorer: per-slice counts tagged by patient -> the same tables and report as slice_table / patient_table /
    dataset_report of those counts; every named reduction; patient order sorted or first seen."""
    tp, fp, fn, tn = _counts()
    scorer = PatientScorer()
    for patient, counts in zip(["b", "b", "a"], zip(tp, fp, fn, tn)):
        scorer.add(patient, *counts)
    slices = slice_table(pd.DataFrame({"patient": ["b", "b", "a"], "tp": tp, "fp": fp, "fn": fn, "tn": tn}))
    got_slices, got_patients, report = scorer.report({"a": 42.0, "b": 1.0})
    pd.testing.assert_frame_equal(got_slices, slices)
    pd.testing.assert_frame_equal(got_patients, patient_table(slices, {"a": 42.0, "b": 1.0}))
    assert report == dataset_report(slices, got_patients)
    assert list(got_patients["patient"]) == ["a", "b"]
    assert scorer.patient_scores() == pytest.approx({"a": 0.0, "b": 0.75})
    assert list(PatientScorer(order="first-seen").extend(zip(["b", "b", "a"], tp, fp, fn, tn)).patient_scores()) == ["b", "a"]
    assert scorer.aggregate("dice", "micro") == report["dice_micro"] == pytest.approx(12 / 20)
    assert scorer.aggregate("iou", "imagewise-tumour-slices") == report["iou_imagewise_tumour_slices"]
    assert scorer.aggregate("dice", "patient-median") == report["patient_dice_median"]
    assert set(scorer.aggregate_all({r: ("iou", r) for r in SCORE_REDUCTIONS})) == set(SCORE_REDUCTIONS)
    with pytest.raises(ValueError, match="unknown reduction"):
        scorer.aggregate("dice", "mean")
    with pytest.raises(ValueError, match="unknown patient order"):
        PatientScorer(order="random")
    scorer.reset()
    assert len(scorer) == 0


def test_scorer_gives_an_empty_truth_predicted_empty_a_perfect_score():
    empty = np.zeros((4, 4), np.uint8)
    scorer = PatientScorer()
    counts = scorer.add_masks("a", empty, empty)
    assert (counts.dice, counts.iou) == (dice(0, 0, 0), iou(0, 0, 0)) == (1.0, 1.0)
    assert scorer.patient_scores("dice") == {"a": 1.0} and scorer.patient_scores("iou") == {"a": 1.0}
    for reduction in ("micro", "imagewise", "patient-mean", "patient-median"):
        assert scorer.aggregate("iou", reduction) == scorer.aggregate("dice", reduction) == 1.0


def test_hd95():
    truth = np.zeros((32, 32), bool)
    truth[8:16, 8:16] = True
    assert hd95(truth, truth) == 0.0
    shifted = np.roll(truth, 3, axis=1)
    assert hd95(shifted, truth) == pytest.approx(3.0)
    assert math.isnan(hd95(np.zeros_like(truth), np.zeros_like(truth)))
    assert math.isinf(hd95(np.zeros_like(truth), truth))
    assert hd95(shifted, truth, spacing=(0.5, 2.0)) == pytest.approx(6.0)  # the shift runs along columns of 2 mm
    assert worst_case_distance((3, 4)) == 5.0 and worst_case_distance((3, 4), (2.0, 1.0)) == pytest.approx(math.sqrt(52))


def test_docs_say_false_positives_on_empty_slices_count():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for text in (metrics.REPORT_MEANING["iou_micro"], readme, metrics.__doc__):
        assert "empty slices add nothing" not in text and "neither help nor hurt IoU or Dice." not in text
    assert "false positives on empty slices" in metrics.REPORT_MEANING["iou_micro"]


def test_perfect_prediction_with_empty_slices_scores_no_misses_and_no_false_alarms():
    # slice 0: tumour found exactly; slices 1 and 2: empty and predicted empty (every rate is 0/0 there)
    tp, fp, fn = np.array([10, 0, 0]), np.array([0, 0, 0]), np.array([0, 0, 0])
    tn = 100 - tp
    scores = all_metrics(tp[:, None], fp[:, None], fn[:, None], tn[:, None])
    for reduction in ("micro-imagewise", "macro-imagewise", "micro"):
        assert scores["iou_score"][reduction] == 1.0 and scores["f1_score"][reduction] == 1.0
        assert scores["sensitivity"][reduction] == 1.0 and scores["precision"][reduction] == 1.0
        for rate in ("false_negative_rate", "false_positive_rate", "false_discovery_rate", "false_omission_rate"):
            assert scores[rate][reduction] == 0.0, (rate, reduction)
    # a missed tumour still counts as a miss image-wise: 1 slice of 3 misses everything
    missed = all_metrics(np.array([[0], [0], [0]]), np.array([[0], [0], [0]]), np.array([[10], [0], [0]]), np.array([[90], [100], [100]]))
    assert missed["false_negative_rate"]["micro-imagewise"] == pytest.approx(1 / 3)
    assert missed["iou_score"]["micro-imagewise"] == pytest.approx(2 / 3)
