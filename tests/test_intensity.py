"""Per-patient intensity standardization: the statistics, the uint8 encoding, and that training and every
inference path apply it the same way when a model was trained with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from script_helpers import load_script

from gliomaseg.core.errors import CheckpointError, ConfigError, InputWarning
from gliomaseg.data.dataset import SliceDataset
from gliomaseg.data.files import read_image
from gliomaseg.data.intensity import BRAIN_THRESHOLD, Z_CENTRE, Z_SCALE, brain_mask, patient_statistics, standardize, standardize_patient
from gliomaseg.data.resize import resize_pair
from gliomaseg.inference.segment import predict_probabilities
from gliomaseg.modeling.spec import ModelInfo


def _slice(values: tuple[int, int, int], size: int = 16) -> np.ndarray:
    """A square of brain (the given channel values) on a black background."""
    image = np.zeros((size, size, 3), np.uint8)
    image[4:12, 4:12] = values
    return image


def test_statistics_are_per_channel_over_the_brain_pixels_of_all_slices():
    first, second = _slice((40, 100, 200)), _slice((60, 100, 100))
    mean, std = patient_statistics([first, second])
    # 64 brain pixels each; the 192 black pixels of each slice do not count.
    np.testing.assert_allclose(mean, [50, 100, 150])
    np.testing.assert_allclose(std, [10, 1, 50])  # a constant channel gets std 1, not a division by 0
    assert brain_mask(first).sum() == 64


def test_a_brighter_scan_of_the_same_patient_standardizes_to_the_same_slices():
    rng = np.random.default_rng(0)
    base = [np.where(rng.random((16, 16, 1)) < 0.6, rng.integers(20, 120, (16, 16, 3)), 0).astype(np.uint8) for _ in range(3)]
    brighter = [(image.astype(np.int32) * 2).astype(np.uint8) for image in base]  # max 238: no overflow
    for a, b in zip(standardize_patient(base), standardize_patient(brighter)):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # rounding only
    out = standardize_patient(base)[0]
    assert (out[~brain_mask(base[0])] == 0).all() and (out[brain_mask(base[0])] >= 1).all()


def test_the_patient_mean_maps_to_the_centre():
    image = _slice((50, 50, 50))
    image[4:8, 4:12] = 70  # half the brain at 70, half at 50: mean 60, std 10
    out = standardize(image, *patient_statistics([image]))
    assert out[5, 5, 0] == Z_CENTRE + Z_SCALE and out[9, 5, 0] == Z_CENTRE - Z_SCALE and out[0, 0, 0] == 0
    assert BRAIN_THRESHOLD < 50


def test_the_dataset_standardizes_with_statistics_over_the_whole_patient(prepared: Path):
    frame = pd.read_csv(prepared / "data_train.csv")
    patient = frame["patient"].iloc[0]
    rows = frame.index[frame["patient"] == patient]
    fixed = SliceDataset(frame, cache=False, image_size=32)
    per_patient = SliceDataset(frame, cache=True, image_size=32, intensity="patient")
    images = [read_image(path) for path in frame.loc[rows, "image_path"]]
    with pytest.warns(InputWarning):  # the synthetic patients have fewer slices than a real one
        expected = standardize_patient(images)
    for row, want in zip(rows, expected):
        got, _ = per_patient.load(row)
        # standardized at native size, then resized: the statistics do not depend on the model's size
        np.testing.assert_array_equal(got, resize_pair(want, None, 32, resize_mask=False)[0])
        assert not np.array_equal(got, fixed.load(row)[0])
    with pytest.raises(ConfigError, match="unknown intensity mode 'zscore'"):
        SliceDataset(frame, intensity="zscore")


def test_preload_reads_each_slice_once_and_caches_what_load_would(prepared: Path, monkeypatch):
    frame = pd.read_csv(prepared / "data_train.csv")
    one_by_one = SliceDataset(frame, cache=True, image_size=32, intensity="patient")
    wanted = [one_by_one.load(index) for index in range(len(frame))]
    import gliomaseg.data.dataset as dataset
    import gliomaseg.data.intensity as intensity

    reads, real_read = [], dataset.read_slice_pair

    def counted(image_path, mask_path, **kwargs):
        reads.append(image_path)
        return real_read(image_path, mask_path, **kwargs)

    monkeypatch.setattr(dataset, "read_slice_pair", counted)
    monkeypatch.setattr(intensity, "read_image", lambda path: pytest.fail(f"{path} read again for its patient's statistics"))
    preloaded = SliceDataset(frame, cache=True, image_size=32, intensity="patient").preload()
    assert sorted(reads) == sorted(frame["image_path"])
    for index, (image, mask) in enumerate(wanted):
        got_image, got_mask = preloaded.load(index)
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_mask, mask)

    # A patient partly cached already (one slice loaded, its statistics known): preload reads only the rest.
    monkeypatch.undo()
    partly = SliceDataset(frame, cache=True, image_size=32, intensity="patient")
    partly.load(0)
    monkeypatch.setattr(dataset, "read_slice_pair", counted)
    reads.clear()
    partly.preload()
    assert sorted(reads) == sorted(frame["image_path"].iloc[1:])
    for index, (image, _) in enumerate(wanted):
        np.testing.assert_array_equal(partly.load(index)[0], image)


def test_model_descriptions_carry_the_mode_and_old_ones_mean_fixed():
    base = {"arch": "Unet", "encoder": "resnet18", "image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "threshold": 0.5}
    assert ModelInfo.from_dict(base, "old.ckpt").intensity == "fixed"
    assert ModelInfo.from_dict({**base, "intensity": "patient"}, "new.ckpt").portable()["intensity"] == "patient"
    with pytest.raises(CheckpointError, match="new.ckpt: model description field 'intensity' must be one of fixed, patient"):
        ModelInfo.from_dict({**base, "intensity": "zscore"}, "new.ckpt")


class _Recorder:
    """Probability = red channel / 255; remembers what it was given."""

    image_size = 16
    threshold = 0.5

    def __init__(self, intensity: str):
        self.info = ModelInfo("Unet", "resnet18", 64, [0.5] * 3, [0.25] * 3, 0.5, intensity=intensity)
        self.seen: list[np.ndarray] = []

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(images.copy())
        return images[..., 0].astype(np.float32) / 255.0


def test_segment_standardizes_a_patient_for_a_model_trained_that_way():
    dim = [_slice((30, 30, 30)), _slice((40, 40, 40))]
    bright = [(image * 3).astype(np.uint8) for image in dim]
    patient = _Recorder("patient")
    with pytest.warns(InputWarning, match="only 2 were given"):
        np.testing.assert_allclose(predict_probabilities(patient, dim)[0], predict_probabilities(patient, bright)[0], atol=1 / 255)
        np.testing.assert_array_equal(patient.seen[0][1], standardize_patient(dim)[1])
    fixed = _Recorder("fixed")
    predict_probabilities(fixed, dim)
    np.testing.assert_array_equal(fixed.seen[0][0], dim[0])  # a fixed model sees the slices as read


def test_a_model_trained_per_patient_says_so_in_checkpoint_and_onnx(prepared: Path, tmp_path: Path, monkeypatch):
    import onnx

    from gliomaseg.export.onnx import export_onnx
    from gliomaseg.inference.onnx_backend import OnnxPredictor
    from gliomaseg.inference.torch_backend import load_checkpoint
    from gliomaseg.training.config import TrainConfig
    from gliomaseg.training.loaders import build_loaders
    from gliomaseg.training.run import train

    with pytest.raises(ConfigError, match="unknown intensity mode"):
        TrainConfig(out=str(tmp_path / "bad"), data=str(prepared), intensity="zscore").validate()
    config = TrainConfig(out=str(tmp_path / "run"), data=str(prepared), epochs=1, batch_size=4, image_size=32, workers=0,
                         progress=False, scheduler="none", intensity="patient", limit_train_batches=2)
    train_loader, val_loader, _, _ = build_loaders(config)
    assert train_loader.dataset.intensity == "patient" and val_loader.dataset.data.intensity == "patient"  # best.ckpt is picked on it
    train(config)
    assert load_checkpoint(tmp_path / "run" / "best.ckpt").info.intensity == "patient"
    result = export_onnx(tmp_path / "run" / "best.ckpt", tmp_path / "model.onnx")
    assert OnnxPredictor(tmp_path / "model.onnx").info.intensity == "patient"
    from gliomaseg.data.intensity import INTENSITY_MEANING

    assert f"- intensity: patient ({INTENSITY_MEANING['patient']})" in Path(result["model_card"]).read_text()
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["gliomaseg"])["input"].endswith(f"pixel: {INTENSITY_MEANING['patient']}")  # the card's words
    assert INTENSITY_MEANING["patient"].startswith("first standardized per patient")

    # the report's overlays segment each picked patient whole, not its one slice alone
    import gliomaseg.inference.segment as segment_module
    from gliomaseg.evaluation.evaluate import evaluate
    from gliomaseg.reporting.report import _sample_overlays

    evaluate(tmp_path / "run" / "best.ckpt", prepared / "data_val.csv", tmp_path / "run" / "eval", compare=False)
    given, real_segment = [], segment_module.segment
    monkeypatch.setattr(segment_module, "segment", lambda predictor, images, *a, **k: (given.append(len(images)), real_segment(predictor, images, *a, **k))[1])
    assert _sample_overlays(tmp_path / "run")
    val = pd.read_csv(prepared / "data_val.csv")
    assert given and min(given) > 1 and set(given) <= set(val.groupby("patient").size())  # whole validation patients

    # scripts/single_slice.py: each patient whole once, then each of its slices alone (standardized by itself)
    script = load_script("single_slice")
    sizes, real = [], script.segment
    monkeypatch.setattr(script, "segment", lambda predictor, images, *a, **k: (sizes.append(len(images)), real(predictor, images, *a, **k))[1])
    assert script.main([str(tmp_path / "run" / "best.ckpt"), str(prepared / "data_val.csv"), "--out", str(tmp_path / "single.csv")]) == 0
    expected = []
    for count in val.groupby("patient", sort=False).size():
        expected += [count] + [1] * count
    assert sizes == expected and len(pd.read_csv(tmp_path / "single.csv")) == val["patient"].nunique()

    # int8 calibration and its check load their slices the way the model sees them
    import gliomaseg.export.quantization as quantization

    calls = []

    def recording(csv, size, **options):
        calls.append(options.get("intensity"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(quantization, "load_slices", recording)
    with pytest.raises(RuntimeError, match="stop here"):
        quantization.write_variant(tmp_path / "model.onnx", tmp_path / "int8.onnx", "int8",
                                   check_csv=prepared / "data_val.csv", calibration_csv=prepared / "data_train.csv")
    assert calls == ["patient"]


def test_a_saved_slice_reads_back_for_the_statistics(tmp_path: Path):
    """The dataset reads a patient's other slices from disk for the statistics: they must be the slices listed."""
    folder = tmp_path / "P1"
    folder.mkdir()
    rows = []
    for k, value in enumerate((40, 80), start=1):
        tifffile.imwrite(folder / f"P1_{k}.tif", _slice((value, value, value)), photometric="rgb")
        tifffile.imwrite(folder / f"P1_{k}_mask.tif", np.zeros((16, 16), np.uint8))
        rows.append({"patient": "P1", "slice": k, "image_path": str(folder / f"P1_{k}.tif"),
                     "mask_path": str(folder / f"P1_{k}_mask.tif"), "diagnosis": 0})
    dataset = SliceDataset(pd.DataFrame(rows), intensity="patient")
    mean, std = dataset.patient_statistics("P1")
    np.testing.assert_allclose(mean, [60, 60, 60])
    np.testing.assert_allclose(std, [20, 20, 20])
    assert dataset.load(0)[0][5, 5, 0] == Z_CENTRE - Z_SCALE


def test_calibration_and_check_slices_are_standardized_like_segment(prepared: Path):
    """int8 calibration and its check see what the model will see: each patient standardized over all its slices."""
    import cv2

    from gliomaseg.export.quantization import load_slices

    csv = prepared / "data_val.csv"
    drawn = load_slices(csv, 32, limit=3, intensity="patient")
    frame = pd.read_csv(csv)
    for path, patient, got in zip(drawn.image_paths, drawn.patients, drawn.images):
        everything = [read_image(p) for p in frame.loc[frame["patient"] == patient, "image_path"]]
        want = standardize(read_image(path), *patient_statistics(everything))
        np.testing.assert_array_equal(got, cv2.resize(want, (32, 32), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(drawn.images, load_slices(csv, 32, limit=3).images)


def test_single_slice_script_scores_each_patient_whole_and_one_slice_at_a_time(trained_run: Path, prepared: Path, tmp_path: Path):
    """scripts/single_slice.py: one row a validation patient; a model that sees slices as read (no per-patient
    step) gives the same masks either way, so only batch-size rounding can move its Dice."""
    module = load_script("single_slice")
    assert module.main([str(trained_run / "best.ckpt"), str(prepared / "data_val.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    table = pd.read_csv(tmp_path / "s.csv")
    val = pd.read_csv(prepared / "data_val.csv")
    assert sorted(table["patient"]) == sorted(val["patient"].unique())
    assert table["slices"].tolist() == [int((val["patient"] == p).sum()) for p in table["patient"]]
    assert table["difference"].abs().max() < 0.01
    from gliomaseg.evaluation.evaluate import evaluate

    evaluate(trained_run / "best.ckpt", prepared / "data_val.csv", tmp_path / "eval", compare=False, tta="none")
    evaluated = pd.read_csv(tmp_path / "eval" / "patients.csv").set_index("patient")["dice_3d"]
    assert table.set_index("patient")["dice_3d_whole_patient"].to_dict() == pytest.approx(evaluated.to_dict(), abs=1e-9)  # as `evaluate` scores


def test_standardize_equals_the_z_score_formula_pixel_by_pixel():
    """The lookup-table implementation gives exactly the float32 formula of the module docstring."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image[:5] = rng.integers(0, BRAIN_THRESHOLD + 1, (5, 50, 3), dtype=np.uint8)  # some background rows
    mean, std = patient_statistics([image])
    pixels = image[image.max(axis=2) > BRAIN_THRESHOLD].astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-9)
    z = (image.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    want = np.clip(np.rint(Z_CENTRE + Z_SCALE * z), 1, 255).astype(np.uint8)
    want[image.max(axis=2) <= BRAIN_THRESHOLD] = 0
    np.testing.assert_array_equal(standardize(image, mean, std), want)
    np.testing.assert_array_equal(brain_mask(image), image.max(axis=2) > BRAIN_THRESHOLD)


def test_the_opencv_paths_give_the_numpy_results_on_views_too():
    """Statistics, standardization and the brain mask of a strided view equal those of its contiguous copy, and the
    sums match numpy's own (the OpenCV histogram counts in float32: exact below 2^24 pixels a slice)."""
    rng = np.random.default_rng(3)
    big = np.where(rng.random((80, 90, 3)) < 0.7, rng.integers(0, 256, (80, 90, 3)), 0).astype(np.uint8)
    view = big[::2, 1::3]  # not contiguous
    copy = np.ascontiguousarray(view)
    mean, std = patient_statistics([view, big])
    want = np.concatenate([a[a.max(axis=2) > BRAIN_THRESHOLD] for a in (copy, big)]).astype(np.float64)
    np.testing.assert_allclose(mean, want.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, want.std(axis=0), rtol=1e-9)
    z = (copy.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    formula = np.where(copy.max(axis=2, keepdims=True) > BRAIN_THRESHOLD,
                       np.clip(np.rint(Z_CENTRE + Z_SCALE * z), 1, 255), 0).astype(np.uint8)
    np.testing.assert_array_equal(standardize(view, mean, std), formula)
    np.testing.assert_array_equal(brain_mask(view), copy.max(axis=2) > BRAIN_THRESHOLD)
    one = np.array([[[BRAIN_THRESHOLD + 1, 0, 0]]], np.uint8)  # a 1x1 slice: OpenCV must not read it as a scalar
    assert brain_mask(one).tolist() == [[True]] and standardize(one, *patient_statistics([one])).shape == (1, 1, 3)
