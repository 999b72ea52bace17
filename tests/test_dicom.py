"""DICOM in (MR series), DICOM SEG out, ``convert --to dicom``, SEG as truth: on series written here with pydicom."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGLossless, generate_uid  # noqa: E402

from gliomaseg.cli import main  # noqa: E402
from gliomaseg.core.errors import DataError, InputWarning  # noqa: E402
from gliomaseg.data.files import scale_volume  # noqa: E402
from gliomaseg.data.sources import open_source  # noqa: E402
from gliomaseg.predict.files import predict  # noqa: E402

SPACING = (1.0, 1.0, 3.3)  # between rows, between columns, between slices (mm)
MR = "1.2.840.10008.5.1.4.1.1.4"


class ChannelPredictor:
    """Probability from all three channels (0.2 pre + 0.5 FLAIR + 0.3 post), so a swapped or missing channel shows."""

    image_size = 32
    threshold = 0.5

    def probabilities(self, images):
        return (images.astype("float32") @ np.array([0.2, 0.5, 0.3], "float32")) / 255.0


def _volume(slices: int = 6, rows: int = 40, cols: int = 48) -> np.ndarray:
    """(N, rows, cols, 3) uint8: a bright box over slices 1-3 in every channel, different noise per channel."""
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 60, (slices, rows, cols, 3), dtype=np.uint8)
    volume[1:4, 8:20, 10:30] = [230, 250, 200]
    volume[2, 30:36, 5:9, 1] = 255  # FLAIR only: below threshold unless FLAIR is weighed in
    return volume


def write_series(folder: Path, values: np.ndarray, *, description: str, number: int, study: str, frame: str,
                 spacing=SPACING, bits_stored: int = 8, modality: str = "MR", order=None, suffix: str = ".dcm",
                 orientation=(1, 0, 0, 0, 1, 0), positions=None, transfer_syntax=ExplicitVRLittleEndian, frames=None) -> list[str]:
    """One axial MR series with pydicom: slice k at z = k x spacing, files named at random, InstanceNumbers shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(number)
    order = rng.permutation(len(values)) if order is None else order
    series_uid = generate_uid()
    uids = []
    for rank, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR
        meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        meta.TransferSyntaxUID = transfer_syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MR, uid
        ds.Modality, ds.PatientName, ds.PatientID = modality, "Test^Case", "case"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series_uid, number
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame if frames is None else frames[k]
        ds.InstanceNumber = int(len(values) - rank)  # out of order on purpose
        ds.ImageOrientationPatient = list(orientation if np.ndim(orientation) == 1 else orientation[k])
        ds.ImagePositionPatient = [-20.0, 10.0, 5.0 + k * spacing[2]] if positions is None else list(positions[k])
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = values.shape[1:3]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        ds.PixelData = values[k].astype("<u2").tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not really a jpeg \xff\xd9"])
        name = f"{rng.integers(1 << 40):x}{suffix}"
        ds.save_as(folder / name, enforce_file_format=True)
        uids.append((k, uid))
    return [uid for _, uid in sorted(uids)]


@pytest.fixture()
def case(tmp_path: Path) -> tuple[Path, np.ndarray, dict]:
    """Three series (pre, FLAIR, post) of one study in three folders; FLAIR's files have no ending (scanners often write none)."""
    volume = _volume()
    study, frame = generate_uid(), generate_uid()
    uids = {}
    for number, role in enumerate(("pre", "flair", "post")):
        uids[role] = write_series(tmp_path / "case" / role, volume[..., number], description=role, number=number + 1,
                                  study=study, frame=frame, suffix="" if role == "flair" else ".dcm")
    return tmp_path / "case", volume, uids


def _roles(folder: Path) -> dict[str, Path]:
    return {role: folder / role for role in ("pre", "flair", "post")}


def test_dicom_prediction_equals_slice_prediction_and_writes_a_seg(case, tmp_path: Path):
    folder, volume, uids = case
    slices = tmp_path / "slices" / "case"
    slices.mkdir(parents=True)
    for k, image in enumerate(volume):
        cv2.imwrite(str(slices / f"case_{k + 1}.png"), image[..., ::-1])
    by_slices = predict(ChannelPredictor(), slices, tmp_path / "by_slices", gifs=False, overlays=False)
    result = predict(ChannelPredictor(), _roles(folder), tmp_path / "out", gifs=False, overlays=False)
    pd.testing.assert_frame_equal(result.predictions[["slice", "tumour_pixels"]], by_slices.predictions[["slice", "tumour_pixels"]])
    expected = np.stack([cv2.imread(p, cv2.IMREAD_UNCHANGED) // 255 for p in by_slices.predictions["mask_out"]])  # (N, rows, cols)
    assert expected[2, 31:35, 6:8].all() and not expected[1, 31:35, 6:8].any()  # the FLAIR-only spot: FLAIR is in the input

    nifti = nib.load(tmp_path / "out" / "case_mask.nii.gz")
    mask = np.asanyarray(nifti.dataobj)
    np.testing.assert_array_equal(mask, expected.transpose(2, 1, 0))  # (cols, rows, slices), the source's voxel order
    position = nifti.affine @ [0, 0, 2, 1]
    np.testing.assert_allclose(position[:3], [20.0, -10.0, 5.0 + 2 * 3.3])  # RAS of voxel (0, 0, 2): LPS (-20, 10, 11.6)
    np.testing.assert_allclose(nib.affines.voxel_sizes(nifti.affine), [1.0, 1.0, 3.3])
    row = result.patients.iloc[0]
    assert row["tumour_volume_voxels"] == expected.sum()
    assert row["tumour_volume_ml"] == pytest.approx(expected.sum() * 1.0 * 1.0 * 3.3 / 1000.0, abs=5e-4)  # mL to 3 decimals

    seg_path = tmp_path / "out" / "case_seg.dcm"
    seg = hd.seg.segread(seg_path)
    description = seg.get_segment_description(1)
    assert description.segment_label == "glioma FLAIR abnormality"
    assert description.segmented_property_category.value == "49755003" and description.segmented_property_type.value == "108369006"
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "gliomaseg" and algorithm.AlgorithmParameters == "model=ChannelPredictor"
    from_seg = seg.get_pixels_by_source_instance(uids["flair"], segment_numbers=[1], dtype=np.uint8)[..., 0]
    np.testing.assert_array_equal(from_seg, expected)  # frames in source order = the slices = the NIfTI mask

    raw = pydicom.dcmread(seg_path)
    assert raw.Modality == "SEG" and raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.SegmentationType == "BINARY"
    referenced = {str(s.SeriesInstanceUID): [str(i.ReferencedSOPInstanceUID) for i in s.ReferencedInstanceSequence]
                  for s in raw.ReferencedSeriesSequence}
    assert sorted(sum(referenced.values(), [])) == sorted(sum(uids.values(), []))  # FLAIR, pre and post, every slice
    frames = raw.pixel_array.reshape(-1, *expected.shape[1:])
    slice_of = {uid: k for k, uid in enumerate(uids["flair"])}
    assert len(frames) == len(expected)
    for frame, group in zip(frames, raw.PerFrameFunctionalGroupsSequence):
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(frame, expected[slice_of[source]])  # each frame names its slice, pixels agree


def test_predict_cli_sequences_and_mapping_file(case, tmp_path: Path, bright_predictor, monkeypatch):
    folder, _, _ = case
    import gliomaseg.inference.backend as predictor_module

    monkeypatch.setattr(predictor_module, "open_predictor", lambda *a, **k: bright_predictor)
    roles = [f"{r}={folder / r}" for r in ("pre", "flair", "post")]
    assert main(["predict", "--sequences", *roles, "--out", str(tmp_path / "a"), "--fps", "1"]) == 0
    (folder / "sequences.txt").write_text("# roles\npre=pre\nflair=flair\npost=post\n")
    assert main(["predict", "--input", str(folder), "--out", str(tmp_path / "b")]) == 0
    outside = tmp_path.with_name(tmp_path.name + "-c")  # an output folder inside the input is refused (issue 22)
    assert main(["predict", "--input", str(folder.parent), "--out", str(outside)]) == 0  # a folder of cases
    a, b = (nib.load(tmp_path / x / "case_mask.nii.gz").get_fdata() for x in ("a", "b"))
    np.testing.assert_array_equal(a, b)
    assert (outside / "case_seg.dcm").is_file()


def test_flair_alone_fills_the_missing_channels_and_one_unnamed_series_is_refused(case, tmp_path: Path, capsys):
    folder, volume, _ = case
    with pytest.warns(InputWarning, match="FLAIR copied"):
        (patient,), _ = open_source({"flair": folder / "flair"})
    image = patient.slices[2].image()
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], volume[2, ..., 1])
    with pytest.raises(DataError, match="allow-grayscale") as error:
        predict(ChannelPredictor(), folder / "flair", tmp_path / "out", gifs=False)
    assert str(folder / "flair") in str(error.value)
    result = predict(ChannelPredictor(), folder / "flair", tmp_path / "out", gifs=False, allow_grayscale=True)
    assert len(result.predictions) == len(volume)


def test_a_sequence_filled_with_flair_is_said_once(case, tmp_path: Path):
    # --sequences flair=DIR alone: the DICOM reader fills pre and post with FLAIR and says so; predict's own check
    # (from the pixels) finds the same and stays quiet, but still writes the column.
    folder, volume, _ = case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict(ChannelPredictor(), {"flair": folder / "flair"}, tmp_path / "out", gifs=False)
    said = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(said) == 1 and "no pre and no post series: FLAIR copied" in said[0], said
    assert set(result.patients["missing_sequences"]) == {"pre-contrast+post-contrast"}
    with warnings.catch_warnings(record=True) as caught:  # pre and post given: nothing to say
        warnings.simplefilter("always")
        predict(ChannelPredictor(), {r: folder / r for r in ("pre", "flair", "post")}, tmp_path / "all", gifs=False)
    assert not [w for w in caught if issubclass(w.category, InputWarning)]


def test_the_viewer_says_a_filled_sequence_once_too(case):
    from gliomaseg.serve.pipeline import SegmentOptions, analyse
    from gliomaseg.serve.uploads import Case

    folder, _, _ = case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (patient,), _ = open_source({"flair": folder / "flair"})
        images = [s.image() for s in patient.slices]
        viewer_case = Case(patient.name, "volume", [s.name for s in patient.slices], images, [None] * len(images),
                           patient.geometry, reported_missing=patient.reported_missing)
        analyse(ChannelPredictor(), viewer_case, SegmentOptions())
    said = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(said) == 1 and "FLAIR copied" in said[0], said
    with pytest.warns(InputWarning, match="pre-contrast and post-contrast are missing"):  # found from the pixels alone
        analyse(ChannelPredictor(), Case(patient.name, "volume", viewer_case.slice_names, images, viewer_case.truths), SegmentOptions())


def test_the_viewer_memory_budget_counts_a_dicom_case_s_datasets(case):
    # The viewer keeps a DICOM case's datasets (to write its Segmentation): their pixel data counts against
    # the result store's byte budget, not only the decoded slices.
    from gliomaseg.serve.pipeline import CaseResult
    from gliomaseg.serve.store import ResultStore
    from gliomaseg.serve.uploads import Case

    folder, volume, _ = case
    (patient,), _ = open_source(_roles(folder))
    geometry = patient.geometry
    pixel_bytes = sum(len(ds.PixelData) for series in geometry.series.values() for ds in series.datasets)
    assert pixel_bytes >= 3 * volume[..., 0].nbytes and geometry.nbytes >= pixel_bytes
    images = [s.image() for s in patient.slices]
    masks = [np.zeros(i.shape[:2], np.uint8) for i in images]
    arrays = sum(a.nbytes for a in images) + 2 * sum(m.nbytes for m in masks)
    result = CaseResult(Case(patient.name, "volume", [s.name for s in patient.slices], images, [None] * len(images), geometry),
                        masks, {}, [], probabilities=[m.copy() for m in masks])
    assert ResultStore.nbytes([result]) == arrays + geometry.nbytes


def test_sixteen_bit_series_are_scaled_per_series(tmp_path: Path):
    rng = np.random.default_rng(1)
    pre, flair = rng.integers(0, 4000, (4, 16, 16)), rng.integers(0, 900, (4, 16, 16))
    study, frame = generate_uid(), generate_uid()
    write_series(tmp_path / "pre", pre, description="t1", number=1, study=study, frame=frame, bits_stored=12)
    write_series(tmp_path / "flair", flair, description="flair", number=2, study=study, frame=frame, bits_stored=12)
    with pytest.warns(InputWarning, match="scaled to 8 bits"), pytest.warns(InputWarning, match="no post series"):
        (patient,), _ = open_source({"pre": tmp_path / "pre", "flair": tmp_path / "flair"})
    images = np.stack([s.image() for s in patient.slices])
    np.testing.assert_array_equal(images[..., 0], np.stack(scale_volume(list(pre.astype(np.float32)))))
    np.testing.assert_array_equal(images[..., 1], np.stack(scale_volume(list(flair.astype(np.float32)))))


def _one(tmp_path: Path, **kwargs) -> Path:
    folder = tmp_path / "series"
    values = kwargs.pop("values", np.zeros((5, 8, 8), np.uint8))
    write_series(folder, values, description="flair", number=1, study=generate_uid(), frame=kwargs.pop("frame", generate_uid()), **kwargs)
    return folder


def _refused(source, match: str, folder: Path) -> str:
    with pytest.raises(DataError, match=match) as error:
        open_source(source)
    assert str(folder) in str(error.value), error.value
    return str(error.value)


def test_refusals_name_the_folder(tmp_path: Path):
    z = [[0, 0, 3.3 * k] for k in range(5)]
    folder = _one(tmp_path / "a", orientation=[(1, 0, 0, 0, 1, 0)] * 4 + [(1, 0, 0, 0, 0.8, 0.6)], positions=z)
    _refused(folder, "mixed orientations", folder)
    folder = _one(tmp_path / "b", positions=[[0, 0, z] for z in (0, 3.3, 6.6, 13.2, 16.5)])
    _refused(folder, "missing slice", folder)
    frames = [generate_uid()] * 4 + [generate_uid()]
    folder = _one(tmp_path / "c", frames=frames)
    _refused(folder, "more than one frame of reference", folder)
    folder = _one(tmp_path / "d", modality="CT")
    _refused(folder, "not MR", folder)
    folder = _one(tmp_path / "e", transfer_syntax=JPEGLossless)
    _refused(folder, r"no decoder .*pip install .*pylibjpeg", folder)

    folder = _one(tmp_path / "f")
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID = generate_uid()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.Modality = "SR"
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    _refused(folder, "not an image", folder)


def test_series_over_the_size_limits_are_refused_from_their_headers(tmp_path: Path, monkeypatch):
    """The one image-side limit and memory budget of every reader (issue 22) hold for DICOM too, before decoding."""
    from gliomaseg.data import dicom

    folder = _one(tmp_path / "big")
    monkeypatch.setattr(dicom, "MAX_IMAGE_SIDE", 4)
    _refused(folder, "8x8 pixels, over the 4 px limit", folder)
    monkeypatch.setattr(dicom, "MAX_IMAGE_SIDE", 4096)
    monkeypatch.setattr(dicom, "MAX_DECODED_BYTES", 5 * 8 * 8 * 4 - 1)
    _refused(folder, "MiB limit", folder)
    monkeypatch.setattr(dicom, "MAX_DECODED_BYTES", 5 * 8 * 8 * 4)
    assert dicom.read_series(folder)[0]  # at the limit itself: read


def test_several_series_and_mismatched_geometry_are_refused(case, tmp_path: Path):
    folder, volume, _ = case
    mixed = tmp_path / "mixed"
    for role in ("pre", "flair"):
        shutil.copytree(folder / role, mixed, dirs_exist_ok=True)
    _refused(mixed, "holds 2 MR series", mixed)
    with pytest.warns(InputWarning, match="no post series"):
        (patient,), _ = open_source({"pre": f"{mixed}@pre", "flair": f"{mixed}@2"})  # DIR@SERIES: by description or number
    np.testing.assert_array_equal(patient.slices[1].image()[..., 0], volume[1, ..., 0])
    other = tmp_path / "other"
    write_series(other, volume[..., 2], description="post", number=3, study=generate_uid(), frame=generate_uid())
    _refused({"flair": folder / "flair", "post": other}, "frame of reference", other)


def test_without_the_extra_the_error_names_it(case, monkeypatch):
    folder, _, _ = case
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DataError, match=r"pip install 'gliomaseg\[dicom\]'") as error:
        open_source(folder / "pre")
    assert str(folder / "pre") in str(error.value)


@pytest.fixture(scope="module")
def converted(synth_root: Path, tmp_path_factory) -> tuple[Path, Path]:
    patient = sorted(synth_root.iterdir())[0]
    out = tmp_path_factory.mktemp("dicom")
    assert main(["convert", "--to", "dicom", "--input", str(patient), "--out", str(out)]) == 0
    return patient, out / patient.name


def test_convert_to_dicom_reads_back_as_the_slices_with_the_seg_as_truth(converted, tmp_path: Path):
    patient, case = converted
    (ours,), problems = open_source(case)
    (theirs,), _ = open_source(patient)
    assert not problems and len(ours.slices) == len(theirs.slices) and ours.geometry.voxel_mm == (1.0, 1.0, 1.0)
    for a, b in zip(ours.slices, theirs.slices):
        np.testing.assert_array_equal(a.image(), b.image())
        np.testing.assert_array_equal(a.mask(), b.mask())
    uids = {pydicom.dcmread(p).StudyInstanceUID for p in case.rglob("*.dcm")}
    assert len(uids) == 1 and pydicom.uid.UID(uids.pop()).is_valid


def test_score_accepts_a_dicom_seg_as_truth(converted, bright_predictor, tmp_path: Path):
    from gliomaseg.evaluation.evaluate import score

    patient, case = converted
    result = predict(bright_predictor, case, tmp_path / "pred", gifs=False, overlays=False)
    by_seg = score(tmp_path / "pred", case / f"{patient.name}_seg.dcm", tmp_path / "s1")
    by_folder = score(tmp_path / "pred", case, tmp_path / "s2")
    by_slices = score(tmp_path / "pred", patient, tmp_path / "s3")  # the kaggle_3m masks themselves
    dice = result.patients["dice_3d"][0]
    assert by_seg["patient_dice_mean"] == by_folder["patient_dice_mean"] == by_slices["patient_dice_mean"] == pytest.approx(dice)


def test_viewer_zip_of_a_dicom_case(converted, tmp_path: Path):
    from gliomaseg.serve.limits import ServeLimits
    from gliomaseg.serve.uploads import gather

    patient, case = converted
    archive = tmp_path / "case.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in case.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(case.parent))
    gathered = gather([("case.zip", archive)], tmp_path / "work", ServeLimits())
    (found,) = gathered.cases
    (theirs,), _ = open_source(patient)
    assert found.kind == "volume" and found.geometry is not None and len(found.images) == len(theirs.slices)
    np.testing.assert_array_equal(found.images[3], theirs.slices[3].image())
    np.testing.assert_array_equal(found.truths[3], theirs.slices[3].mask())


@pytest.mark.skipif(shutil.which("dciodvfy") is None and shutil.which("dcmdump") is None,
                    reason="needs dicom3tools' dciodvfy or DCMTK's dcmdump (apt-get install dicom3tools dcmtk)")
def test_written_dicom_passes_dciodvfy(converted, bright_predictor, tmp_path: Path):
    patient, case = converted
    predict(bright_predictor, case, tmp_path / "pred", gifs=False, overlays=False)
    files = [tmp_path / "pred" / f"{patient.name}_seg.dcm", case / f"{patient.name}_seg.dcm", case / "flair" / "1.dcm"]
    for path in files:
        if shutil.which("dciodvfy"):
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
            assert not errors, f"{path}: {errors}"
        if shutil.which("dcmdump"):
            run = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
            assert run.returncode == 0 and "E:" not in run.stderr, run.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pydicom.dcmread(files[0]).SeriesDescription.startswith("SEG")
