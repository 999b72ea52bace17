"""The viewer's server over real HTTP on loopback: results equal `predict`, limits and bad input give readable 4xx."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_helpers import live_server, multipart, request, upload

nib = pytest.importorskip("nibabel")
pytest.importorskip("fastapi")

from gliomaseg.cli import build_parser, main  # noqa: E402
from gliomaseg.core.io import clean_name  # noqa: E402
from gliomaseg.data.files import read_image  # noqa: E402
from gliomaseg.inference.torch_backend import load_checkpoint  # noqa: E402
from gliomaseg.predict.files import predict  # noqa: E402
from gliomaseg.serve.app import STATIC, create_app  # noqa: E402
from gliomaseg.serve.limits import ServeLimits  # noqa: E402
from gliomaseg.serve.uploads import inside  # noqa: E402

LIMITS = ServeLimits(max_upload_bytes=2 << 20, max_unpacked_bytes=4 << 20, max_files=60, max_image_side=512, max_results=3)


@pytest.fixture(scope="module")
def predictor(trained_run: Path):
    return load_checkpoint(trained_run / "best.ckpt")


@pytest.fixture(scope="module")
def server(predictor, tmp_path_factory):
    temp_root = tmp_path_factory.mktemp("serve-tmp")
    with live_server(create_app(predictor, limits=LIMITS, temp_root=temp_root, model_label="test")) as base:
        yield base, temp_root


@pytest.fixture(scope="module")
def patient(synth_root: Path) -> Path:
    return sorted(synth_root.iterdir())[0]


def _slices(patient: Path) -> list[Path]:
    return sorted((p for p in patient.glob("*.tif") if not p.stem.endswith("_mask")), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def _zip_pngs(raw: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {n: cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_UNCHANGED)
                for n in archive.namelist() if n.endswith(".png")}


def _predicted(out: Path, patient: str) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (out / patient).glob("*_pred.png")}


def _volume(images: list[np.ndarray]) -> np.ndarray:
    """Slices (H, W[, C]) as an RAS volume (X, Y, Z[, C]) that reads back as these slices.

    The package reorients to LPS and shows slice k of the LPS array as ``lps[:, :, k].T``, so an RAS
    voxel (x, y) is the image pixel (H - 1 - y, W - 1 - x).
    """
    return np.stack([im.swapaxes(0, 1)[::-1, ::-1] for im in images], axis=2)


def _as_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The inverse of :func:`_volume` for an RAS mask volume (X, Y, Z): one (H, W) image per slice."""
    return [volume[::-1, ::-1, k].T for k in range(volume.shape[2])]


def test_safe_names_stay_inside_the_folder(tmp_path: Path):
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("..\\..\\win.ini") == "win.ini"
    assert clean_name("..") == "upload" and clean_name("") == "upload" and clean_name(".hidden.tif") == "hidden.tif"
    assert clean_name("a b/ä$.tif") == "_.tif"
    assert len(clean_name("x" * 500 + ".nii.gz")) <= 120 and clean_name("x" * 500 + ".nii.gz").endswith(".nii.gz")
    assert inside(tmp_path, "a", "b.tif") == tmp_path.resolve() / "a" / "b.tif"
    with pytest.raises(Exception, match="outside"):
        inside(tmp_path, "..", "x.tif")


def test_slice_with_mask_matches_predict(server, predictor, patient: Path, tmp_path: Path):
    base, temp_root = server
    image = _slices(patient)[len(_slices(patient)) // 2]
    mask = image.with_name(f"{image.stem}_mask.tif")
    status, body = upload(base, [image, mask])
    assert status == 200, body
    (case,) = body["cases"]
    expected = predict(predictor, image, tmp_path, gifs=False, overlays=False)
    row = expected.predictions.iloc[0]
    summary, slice_row = case["summary"], case["slices"][0]
    assert summary["patient"] == patient.name and summary["slices"] == 1
    assert slice_row["tumour_pixels"] == row["tumour_pixels"]
    assert summary["dice_3d"] == pytest.approx(row["dice"], abs=1e-4) and slice_row["dice"] == pytest.approx(row["dice"], abs=1e-4)
    # Every contour point lies on a predicted pixel, and the truth's on a true pixel.
    predicted = cv2.imread(row["mask_out"], cv2.IMREAD_UNCHANGED) > 0
    truth = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED) > 0
    for polygons, pixels in ((slice_row["prediction"], predicted), (slice_row["truth"], truth)):
        points = np.array([p for polygon in polygons for p in polygon])
        assert len(points) and pixels[points[:, 1], points[:, 0]].all()
    # The slice shown is the slice read, and the downloaded mask is predict's mask.
    status, _, png = request(base + slice_row["image"])
    shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert status == 200 and np.array_equal(shown, read_image(image))
    status, headers, raw = request(base + body["masks_zip"])
    assert status == 200 and headers["content-type"] == "application/zip"
    assert np.array_equal(_zip_pngs(raw)[f"{patient.name}/{image.stem}_pred.png"], predicted.astype(np.uint8) * 255)
    assert list(temp_root.iterdir()) == []


def test_an_upload_of_two_slices_of_one_name_keeps_both(server, patient: Path, tmp_path: Path):
    """predict refuses P_1.tif beside P_1.png (they would write one output); an upload cannot be asked to rename,
    so the viewer names the second P_1-2 and segments both."""
    base, _ = server
    image = _slices(patient)[0]
    copy = tmp_path / f"{image.stem}.png"
    cv2.imwrite(str(copy), cv2.cvtColor(read_image(_slices(patient)[1]), cv2.COLOR_RGB2BGR))
    status, body = upload(base, [image, copy])
    assert status == 200, body
    (case,) = body["cases"]
    assert case["summary"]["slices"] == 2
    status, _, raw = request(base + body["masks_zip"])
    names = sorted(n for n in _zip_pngs(raw))
    assert status == 200 and names == [f"{patient.name}/{image.stem}-2_pred.png", f"{patient.name}/{image.stem}_pred.png"]


def test_patient_zip_and_nifti_volume_match_predict(server, predictor, patient: Path, tmp_path: Path):
    base, temp_root = server
    expected = predict(predictor, patient, tmp_path / "pred", gifs=False, overlays=False)
    want = _predicted(tmp_path / "pred", patient.name)
    dice_3d = float(expected.patients.iloc[0]["dice_3d"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # wrapped in an extra folder, as zips of a download folder are
        for file in patient.iterdir():
            archive.write(file, f"download/{patient.name}/{file.name}")
    status, body = upload(base, [("patient.zip", buffer.getvalue())])
    assert status == 200, body
    (case,) = body["cases"]
    assert [s["name"] for s in case["slices"]] == [p.stem for p in _slices(patient)]
    assert case["summary"]["dice_3d"] == pytest.approx(dice_3d, abs=1e-4)
    assert case["summary"]["tumour_volume_voxels"] == int(expected.predictions["tumour_pixels"].sum())
    got = _zip_pngs(request(base + body["masks_zip"])[2])
    assert {k.split("/", 1)[1]: v for k, v in got.items()} .keys() == want.keys()
    assert all(np.array_equal(got[f"{patient.name}/{name}"], mask) for name, mask in want.items())

    # The same slices as one NIfTI volume (uint8 RGB, 1.5 mm voxels) with its truth volume.
    images = [read_image(p) for p in _slices(patient)]
    truths = [cv2.imread(str(p.with_name(f"{p.stem}_mask.tif")), cv2.IMREAD_UNCHANGED) // 255 for p in _slices(patient)]
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-90, 120, 30]
    volume = nib.Nifti1Image(_volume(images), affine)
    volume.header.set_xyzt_units("mm")  # a voxel size counts only when the header says its unit
    truth = nib.Nifti1Image(_volume(truths).astype(np.uint8), affine)
    files = [("brain.nii.gz", gzip.compress(volume.to_bytes())), ("brain_mask.nii.gz", gzip.compress(truth.to_bytes()))]
    status, body = upload(base, files)
    assert status == 200, body
    (case,) = body["cases"]
    assert case["summary"]["kind"] == "volume" and case["summary"]["slices"] == len(images)
    assert case["summary"]["dice_3d"] == pytest.approx(dice_3d, abs=1e-4)
    assert case["summary"]["tumour_volume_ml"] == pytest.approx(case["summary"]["tumour_volume_voxels"] * 1.5 * 1.5 * 2.0 / 1000, abs=1e-3)
    status, _, raw = request(base + case["nifti"])
    mask_volume = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    assert status == 200 and mask_volume.shape == volume.shape[:3] and np.allclose(mask_volume.affine, affine)
    shown = _as_slices(np.asarray(mask_volume.dataobj))
    for k, p in enumerate(_slices(patient)):
        assert np.array_equal(shown[k], want[f"{p.stem}_pred.png"] // 255)
    assert list(temp_root.iterdir()) == []


def test_ras_volume_in_the_viewer_equals_predict_voxel_for_voxel(server, predictor, patient: Path, tmp_path: Path):
    """An anisotropic RAS volume, not square in plane: the viewer's mask volume is predict's, voxel for voxel, same affine."""
    base, temp_root = server
    images = [read_image(p)[:, 40:-24] for p in _slices(patient)]  # (256, 192): columns cut unevenly, not mirror-symmetric
    affine = np.array([[0.7, 0, 0, -80.0], [0, 1.1, 0, -95.0], [0, 0, 4.0, 12.0], [0, 0, 0, 1]])
    path = tmp_path / "ras.nii.gz"
    ras = nib.Nifti1Image(_volume(images), affine)
    ras.header.set_xyzt_units("mm")
    nib.save(ras, path)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    predict(predictor, path, tmp_path / "pred", gifs=False, overlays=False)
    want = nib.load(tmp_path / "pred" / "ras_mask.nii.gz")
    expected = np.asarray(want.dataobj)
    assert expected.any() and not np.array_equal(expected, expected[::-1]), "predict's mask is empty or left-right symmetric"

    status, body = upload(base, [path])
    assert status == 200, body
    (case,) = body["cases"]
    assert case["summary"]["tumour_volume_voxels"] == int(expected.sum())
    assert case["summary"]["voxel_mm"] == [0.7, 1.1, 4.0]
    assert case["summary"]["tumour_volume_ml"] == pytest.approx(expected.sum() * 0.7 * 1.1 * 4.0 / 1000, abs=1e-3)
    status, _, png = request(base + case["slices"][3]["image"])  # the slice shown is the slice as predict reads it
    assert np.array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), images[3])
    status, _, raw = request(base + case["nifti"])
    got = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    assert status == 200 and got.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(got.affine, want.affine)
    np.testing.assert_array_equal(np.asarray(got.dataobj), expected)
    assert list(temp_root.iterdir()) == []


def _png(height: int, width: int) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("files, status, words", [
    ([("scan.png", b"this is not an image")], 400, ["scan.png", "does not decode"]),
    ([("notes.txt", b"hello")], 400, ["notes.txt", "unsupported file type"]),
    ([("big.png", _png(600, 300))], 413, ["big.png", "600x300", "512"]),
    ([("huge.png", b"\0" * (4 << 20))], 413, ["larger than the limit", "2 MiB"]),
    ([("bomb.zip", _zip({"p/p_1.tif": b"\0" * (5 << 20)}))], 413, ["bomb.zip", "unpacks to"]),
    ([("broken.zip", b"PK\3\4 not really")], 400, ["broken.zip", "not a readable zip"]),
    ([("vol.nii.gz", gzip.compress(nib.Nifti1Image(np.zeros((8, 8, 2, 5), np.uint8), np.eye(4)).to_bytes()))],
     400, ["vol.nii.gz", "(8, 8, 2, 5)"]),
    ([("vol.nii", b"garbage")], 400, ["vol.nii", "not a readable NIfTI"]),
    ([("one.nii.gz", gzip.compress(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), np.eye(4)).to_bytes()))],
     400, ["one.nii.gz", "1 channel(s); expected 3"]),  # as `predict` refuses it: the model needs the three kaggle_3m channels
    ([("wide.nii.gz", gzip.compress(nib.Nifti1Image(np.zeros((8, 600, 2, 3), np.uint8), np.eye(4)).to_bytes()))],
     413, ["wide.nii.gz", "600x8 voxels", "512"]),
    ([("deep.nii.gz", gzip.compress(nib.Nifti1Image(np.zeros((4, 4, 1001, 3), np.uint8), np.eye(4)).to_bytes()))],
     413, ["deep.nii.gz", "1001 slices", "1000"]),
])
def test_bad_uploads_get_a_readable_4xx(server, files, status, words):
    base, temp_root = server
    got, body = upload(base, files)
    assert got == status, body
    assert all(w in body["error"] for w in words), body["error"]
    assert "Traceback" not in body["error"] and str(temp_root) not in body["error"]
    assert list(temp_root.iterdir()) == []


def test_names_cannot_escape_the_request_folder(server, patient: Path):
    base, temp_root = server
    image = _slices(patient)[0].read_bytes()
    members = {"../../../../escape_1.tif": image, "/abs/escape_2.tif": image, "..\\..\\escape_3.tif": image}
    status, body = upload(base, [("../../up_1.tif", image), ("evil.zip", _zip(members))])
    assert status == 200, body
    names = sorted(s["name"] for c in body["cases"] for s in c["slices"])
    assert names == ["escape_1", "escape_2", "escape_3", "up_1"]
    for folder in (temp_root, temp_root.parent, temp_root.parent.parent):
        assert not any(folder.glob("escape_*")) and not any(folder.glob("up_1*"))
    assert list(temp_root.iterdir()) == []


def test_results_expire_and_say_so(server, patient: Path):
    base, _ = server
    first = None
    for _ in range(LIMITS.max_results + 1):
        status, body = upload(base, [_slices(patient)[0]])
        assert status == 200
        first = first or body
    status, _, raw = request(base + first["masks_zip"])
    assert status == 404 and "expired" in json.loads(raw)["error"]
    assert request(f"{base}/api/results/{'x' * 500}/masks.zip")[0] == 404


def test_page_is_self_contained_and_safe(server):
    base, _ = server
    status, headers, html = request(base + "/")
    assert status == 200 and b'src="/static/app.js"' in html
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    for path in ("/static/app.js", "/static/style.css"):
        assert request(base + path)[0] == 200
    for file in STATIC.iterdir():  # nothing loaded from outside: no absolute URLs in the page's files
        text = file.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, file
    for path in ("/docs", "/redoc", "/openapi.json"):  # FastAPI's docs pages load scripts from a CDN: off
        assert request(base + path)[0] == 404
    assert request(base + "/static/../../../etc/passwd")[0] == 404


def test_serve_cli_defaults_and_errors(tmp_path: Path, capsys):
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.model is None and args.checkpoint is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model", "a.onnx", "--checkpoint", "b.ckpt"])
    assert main(["serve", "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: ONNX model does not exist" in capsys.readouterr().err


def test_multipart_without_files_is_a_400(server):
    base, _ = server
    body, content_type = multipart([], field="files")
    status, _, raw = request(f"{base}/api/segment", body, {"Content-Type": content_type})
    assert status == 400 and "no file" in json.loads(raw)["error"]


def test_units_report_and_downloads_of_a_result(server, patient: Path):
    """Slices have no voxel size: voxels and 'spacing unknown', never mL; the report, GIF, overlays and probability map download."""
    base, _ = server
    files = [p for s in _slices(patient)[:4] for p in (s, s.with_name(f"{s.stem}_mask.tif"))]
    status, body = upload(base, files)
    assert status == 200, body
    (case,) = body["cases"]
    summary = case["summary"]
    assert summary["spacing"] == "spacing unknown" and "tumour_volume_ml" not in summary and "voxel_mm" not in summary
    assert summary["slices_with_true_tumour"] == sum(int(cv2.imread(str(f), cv2.IMREAD_UNCHANGED).any()) for f in files[1::2])
    status, headers, page = request(base + body["report"])
    text = page.decode()
    assert status == 200 and "Research use only" in text and f"{summary['tumour_volume_voxels']} voxels (spacing unknown)" in text
    assert f"<td>{summary['dice_3d']:.3f}</td>" in text and "http" not in text
    status, _, gif = request(base + case["gif"])
    assert status == 200 and gif[:6] == b"GIF89a"
    with zipfile.ZipFile(io.BytesIO(request(base + body["overlays_zip"])[2])) as archive:
        assert len([n for n in archive.namelist() if n.endswith("_overlay.png")]) == 4
    status, _, png = request(base + case["slices"][0]["image"].replace(".png", "/probability.png"))
    prob = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert status == 200 and prob.ndim == 2 and prob.dtype == np.uint8
    assert ((prob > 127).sum() > 0) == (case["slices"][0]["tumour_pixels"] > 0)
    status, body = upload(base, files[1:2])  # a mask alone
    assert status == 400 and "this is a mask; give the image it belongs to" in body["error"]


def test_served_spacing_sizes_the_downloaded_mask_volume(predictor, patient: Path, tmp_path: Path):
    """`serve --spacing` gives uploaded slices a voxel size: the summary's mL and the downloaded NIfTI's header agree."""
    with live_server(create_app(predictor, limits=LIMITS, temp_root=tmp_path, model_label="test", spacing=(1.0, 1.0, 3.0))) as base:
        files = [p for s in _slices(patient)[:3] for p in (s, s.with_name(f"{s.stem}_mask.tif"))]
        status, body = upload(base, files)
        assert status == 200, body
        (case,) = body["cases"]
        assert "tumour_volume_ml" in case["summary"]
        status, _, data = request(base + case["nifti"])
    assert status == 200
    (tmp_path / "m.nii.gz").write_bytes(data)
    image = nib.load(tmp_path / "m.nii.gz")
    assert tuple(float(z) for z in image.header.get_zooms()[:3]) == (1.0, 1.0, 3.0)
    assert image.header.get_xyzt_units()[0] == "mm"
