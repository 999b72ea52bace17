from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gliomaseg.cli import main
from gliomaseg.core.errors import DataError
from gliomaseg.data.convert import convert_to_nifti
from gliomaseg.data.sources import open_source
from gliomaseg.predict.files import predict


@pytest.fixture(scope="module")
def converted(synth_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nifti")
    convert_to_nifti(sorted(synth_root.iterdir())[0], out)
    return out


def test_convert_writes_volumes_that_read_back_as_the_slices(synth_root: Path, converted: Path):
    patient = sorted(synth_root.iterdir())[0]
    volume = nib.load(converted / f"{patient.name}.nii.gz")
    mask = nib.load(converted / f"{patient.name}_mask.nii.gz")
    slices = len(list(patient.glob("*_mask.tif")))
    assert volume.shape == (256, 256, slices, 3) and mask.shape == (256, 256, slices)
    assert volume.get_data_dtype() == np.uint8 and set(np.unique(np.asanyarray(mask.dataobj)).tolist()) <= {0, 1}
    assert nib.aff2axcodes(volume.affine) == ("L", "P", "S")
    (case,), problems = open_source(converted / f"{patient.name}.nii.gz")
    (original,), _ = open_source(patient)
    assert not problems and [s.slice for s in case.slices] == [s.slice for s in original.slices]
    for ours, theirs in zip(case.slices, original.slices):
        np.testing.assert_array_equal(ours.image(), theirs.image())
        np.testing.assert_array_equal(ours.mask(), theirs.mask())


def test_nifti_prediction_equals_slice_prediction(trained_run: Path, synth_root: Path, converted: Path, tmp_path: Path):
    from gliomaseg.inference.torch_backend import load_checkpoint

    predictor = load_checkpoint(trained_run / "best.ckpt")
    patient = sorted(synth_root.iterdir())[0]
    by_slices = predict(predictor, patient, tmp_path / "slices", gifs=False, overlays=False)
    by_volume = predict(predictor, converted / f"{patient.name}.nii.gz", tmp_path / "volume", gifs=False)
    volume = np.asanyarray(nib.load(tmp_path / "volume" / f"{patient.name}_mask.nii.gz").dataobj)
    for k, row in enumerate(by_slices.predictions.itertuples()):
        from_png = cv2.imread(row.mask_out, cv2.IMREAD_UNCHANGED) // 255
        np.testing.assert_array_equal(volume[:, :, k].T, from_png)
    columns = ["slice", "tumour_pixels", "dice"]
    pd.testing.assert_frame_equal(by_volume.predictions[columns], by_slices.predictions[columns])
    assert by_volume.patients["dice_3d"][0] == by_slices.patients["dice_3d"][0]
    assert Path(by_volume.predictions["overlay_out"][0]).is_file()


def _ras_case(tmp_path: Path, name: str = "case") -> tuple[Path, np.ndarray]:
    """A 4D RAS volume (X, Y, Z, 3) with anisotropic voxels and an offset, bright in one box."""
    data = np.zeros((40, 48, 5, 3), np.uint8)
    data[5:15, 30:44, 1:4, 0] = 255  # red box: what the bright predictor segments
    affine = np.array([[0.9, 0, 0, -20.0], [0, 0.8, 0, 10.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, affine


def test_mask_volume_keeps_shape_affine_and_orientation(bright_predictor, tmp_path: Path):
    path, affine = _ras_case(tmp_path)
    result = predict(bright_predictor, path, tmp_path / "out", gifs=False, overlays=False)
    written = nib.load(tmp_path / "out" / "case_mask.nii.gz")
    assert written.shape == (40, 48, 5) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, affine)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(affine) == ("R", "A", "S")
    mask = np.asanyarray(written.dataobj)
    expected = np.zeros((40, 48, 5), np.uint8)
    expected[5:15, 30:44, 1:4] = 1
    np.testing.assert_array_equal(mask, expected)  # the box is found where it is, in the input's voxel order
    assert len(result.predictions) == 5 and result.patients["tumour_volume_voxels"][0] == expected.sum()


def test_three_channel_files_equal_one_4d_volume(bright_predictor, tmp_path: Path):
    path, affine = _ras_case(tmp_path)
    data = np.asanyarray(nib.load(path).dataobj)
    channels = []
    for c, name in enumerate(("pre", "flair", "post")):
        channels.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data[..., c], affine), channels[-1])
    a = predict(bright_predictor, path, tmp_path / "a", gifs=False, overlays=False)
    b = predict(bright_predictor, channels, tmp_path / "b", gifs=False, overlays=False)
    assert a.predictions["tumour_pixels"].tolist() == b.predictions["tumour_pixels"].tolist()
    np.testing.assert_array_equal(nib.load(tmp_path / "b" / "pre_mask.nii.gz").dataobj, nib.load(tmp_path / "a" / "case_mask.nii.gz").dataobj)


def test_bad_nifti_inputs_get_one_clear_error(tmp_path: Path):
    path, affine = _ras_case(tmp_path)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.uint8), affine), flat)
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4, 2), np.uint8), affine), two)
    single = tmp_path / "single.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4), np.uint8), affine), single)
    cases = {truncated: "truncated", fake: "not a readable NIfTI", flat: "2D NIfTI", two: "2 channel", single: "1 channel"}
    for bad, problem in cases.items():
        with pytest.raises(DataError, match=problem) as info:
            open_source(bad)
        assert str(info.value).startswith(str(bad)), info.value


def test_convert_and_predict_cli(synth_root: Path, tmp_path: Path, bright_predictor):
    assert main(["convert", "--input", str(synth_root), "--out", str(tmp_path / "n")]) == 0
    assert len(pd.read_csv(tmp_path / "n" / "converted.csv")) == len(list(synth_root.iterdir()))
    (tmp_path / "n" / "converted.csv").unlink()
    patients, problems = open_source(tmp_path / "n")  # a folder of NIfTI cases, masks beside them
    assert len(patients) == len(list(synth_root.iterdir())) and not problems
    assert all(p.geometry is not None and p.slices[0].mask() is not None for p in patients)


# --- gliomaseg score -----------------------------------------------------------------------------

def test_score_png_predictions_matches_predict(bright_predictor, synth_root: Path, tmp_path: Path):
    from gliomaseg.evaluation.evaluate import score

    patient = sorted(synth_root.iterdir())[1]
    predicted = predict(bright_predictor, patient, tmp_path / "pred", gifs=False, overlays=False)
    summary = score(tmp_path / "pred", patient, tmp_path / "scored")
    patients = pd.read_csv(tmp_path / "scored" / "patients.csv")
    assert patients["dice_3d"][0] == pytest.approx(predicted.patients["dice_3d"][0])
    slices = pd.read_csv(tmp_path / "scored" / "slices.csv")
    assert slices["predicted_pixels"].tolist() == predicted.predictions["tumour_pixels"].tolist()
    assert summary["threshold"] is None and "predictions:" in (tmp_path / "scored" / "summary.md").read_text()
    next((tmp_path / "pred" / patient.name).glob("*_pred.png")).unlink()
    with pytest.raises(DataError, match="no prediction for slice"):
        score(tmp_path / "pred", patient, tmp_path / "again")


def test_score_cli_nifti_truth_as_prediction_is_perfect(synth_root: Path, converted: Path, tmp_path: Path):
    patient = sorted(synth_root.iterdir())[0]
    assert main(["score", "--pred", str(converted), "--truth", str(patient), "--out", str(tmp_path)]) == 0
    summary = pd.read_json(tmp_path / "summary.json", typ="series")
    for key in ("iou_imagewise", "dice_micro", "patient_dice_mean"):
        assert summary[key] == 1.0, key
