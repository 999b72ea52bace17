"""Physical units (given, from a NIfTI header, unknown), convert's layouts, and the per-patient report.html."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gliomaseg.core.errors import DataError
from gliomaseg.core.units import volume_text
from gliomaseg.data.convert import convert_to_nifti
from gliomaseg.evaluation.evaluate import score
from gliomaseg.predict.files import predict


def _patient(synth_root: Path) -> Path:
    return sorted(synth_root.iterdir())[0]


def test_convert_records_unknown_units_and_predict_says_spacing_unknown(synth_root, bright_predictor, tmp_path: Path):
    patient = _patient(synth_root)
    convert_to_nifti(patient, tmp_path / "nii")
    header = nib.load(tmp_path / "nii" / f"{patient.name}.nii.gz").header
    assert header.get_xyzt_units()[0] == "unknown"
    result = predict(bright_predictor, tmp_path / "nii" / f"{patient.name}.nii.gz", tmp_path / "pred")
    row = pd.read_csv(tmp_path / "pred" / "patients.csv").iloc[0]
    assert row["spacing"] == "spacing unknown" and pd.isna(row["tumour_volume_ml"]) and row["tumour_volume_voxels"] > 0
    report = (tmp_path / "pred" / "report.html").read_text()
    assert f"{row['tumour_volume_voxels']} voxels (spacing unknown)" in report and " mL (" not in report
    assert result.report == tmp_path / "pred" / "report.html"


def test_spacing_from_a_nifti_header_and_given_gives_ml_and_hd95_in_mm(synth_root, bright_predictor, tmp_path: Path):
    patient = _patient(synth_root)
    convert_to_nifti(patient, tmp_path / "nii", spacing=(0.5, 0.5, 4.0))
    image = nib.load(tmp_path / "nii" / f"{patient.name}.nii.gz")
    assert image.header.get_xyzt_units()[0] == "mm" and image.header.get_zooms()[:3] == (0.5, 0.5, 4.0)
    predict(bright_predictor, tmp_path / "nii" / f"{patient.name}.nii.gz", tmp_path / "pred")
    row = pd.read_csv(tmp_path / "pred" / "patients.csv").iloc[0]
    assert row["tumour_volume_ml"] == pytest.approx(row["tumour_volume_voxels"] * 1.0 / 1000, abs=1e-3)
    assert row["spacing"] == "0.5x0.5x4 mm" and row["true_volume_ml"] == pytest.approx(row["true_volume_voxels"] / 1000, abs=1e-3)
    assert volume_text(int(row["tumour_volume_voxels"]), (0.5, 0.5, 4.0)) in (tmp_path / "pred" / "report.html").read_text()
    # score reads the truth's header: HD95 in mm, and the same as the spacing given by hand
    from_header = score(tmp_path / "pred", tmp_path / "nii", tmp_path / "s1")
    given = score(tmp_path / "pred", patient, tmp_path / "s2", spacing=(0.5, 0.5, 4.0))  # x, y, z as everywhere
    unknown = score(tmp_path / "pred", patient, tmp_path / "s3")
    assert from_header["hd95_unit"].startswith("mm") and given["hd95_unit"].startswith("mm")
    assert unknown["hd95_unit"].startswith("pixels (spacing unknown")
    assert from_header["patient_hd95_mean"] == pytest.approx(given["patient_hd95_mean"])
    assert from_header["patient_hd95_mean"] != pytest.approx(unknown["patient_hd95_mean"])
    # slices with a given spacing
    predict(bright_predictor, patient, tmp_path / "pred2", spacing=(1.0, 1.0, 2.0), gifs=False)
    row = pd.read_csv(tmp_path / "pred2" / "patients.csv").iloc[0]
    assert row["tumour_volume_ml"] == pytest.approx(row["tumour_volume_voxels"] * 2 / 1000, abs=1e-3)
    with pytest.raises(DataError, match="spacing"):
        predict(bright_predictor, patient, tmp_path / "bad", spacing=(1.0, 0.0, 2.0))


def test_convert_sequences_layout_writes_three_3d_files_that_predict_reads(synth_root, bright_predictor, tmp_path: Path):
    patient = _patient(synth_root)
    convert_to_nifti(patient, tmp_path / "seq", layout="sequences")
    files = [tmp_path / "seq" / f"{patient.name}_{s}.nii.gz" for s in ("pre-contrast", "flair", "post-contrast")]
    assert all(nib.load(f).ndim == 3 for f in files) and not (tmp_path / "seq" / f"{patient.name}.nii.gz").exists()
    convert_to_nifti(patient, tmp_path / "four")
    four = nib.load(tmp_path / "four" / f"{patient.name}.nii.gz").get_fdata()
    np.testing.assert_array_equal(nib.load(files[1]).get_fdata(), four[..., 1])  # FLAIR is channel 1
    folder = predict(bright_predictor, tmp_path / "seq", tmp_path / "p1", gifs=False)  # the folder: one case of three files
    single = predict(bright_predictor, tmp_path / "four", tmp_path / "p2", gifs=False)
    assert list(folder.patients["patient"]) == [patient.name] and "dice_3d" in folder.patients
    assert folder.patients["tumour_volume_voxels"][0] == single.patients["tumour_volume_voxels"][0]


def test_report_has_the_numbers_key_slices_and_no_external_urls(synth_root, bright_predictor, tmp_path: Path):
    patient = _patient(synth_root)
    result = predict(bright_predictor, patient, tmp_path / "pred", model={"name": "Unet-test", "validation": "validation Dice 0.5"})
    page = result.report.read_text()
    row = result.patients.iloc[0]
    assert page.startswith("<!doctype html>") and "Research use only, not for diagnosis." in page
    assert patient.name in page and "Unet-test" in page and f"{row['dice_3d']:.3f}" in page
    assert f"<td>{row['slices_with_tumour']}</td>" in page and f"<td>{row['slices_with_true_tumour']}</td>" in page
    assert "largest tumour: slice" in page and page.count("data:image/png;base64,") >= 1 and "data:image/gif;base64," in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http" not in page
    assert "missing (a copy of FLAIR)" not in page


def test_missing_sequence_note():
    from gliomaseg.predict.report import missing_note

    assert missing_note("pre-contrast") == "pre-contrast missing (a copy of FLAIR)"
    assert missing_note("pre-contrast+post-contrast") == "pre-contrast and post-contrast missing (a copy of FLAIR)"
    assert missing_note(float("nan")) == missing_note("") == missing_note(None) == ""
