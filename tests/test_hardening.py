"""Issue 22, the second audit: files that bypassed the size guard, silently wrong numbers, outputs that mix or go stale.

Every test builds its own small synthetic input; none needs the real data.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from gliomaseg.core.errors import DataError
from gliomaseg.core.limits import MAX_IMAGE_SIDE
from gliomaseg.data import files, nifti


def _png_header(width: int, height: int) -> bytes:
    """A PNG of a signature, an IHDR claiming ``width`` x ``height`` (8-bit RGB) and one tiny IDAT: 100-odd bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- item 4: every decoder error is a DataError; the size guard holds for every format ------------------------------

@pytest.mark.parametrize("side", [60000, 19000])
def test_png_claiming_a_huge_size_is_refused_by_its_header(tmp_path: Path, monkeypatch, side: int):
    path = tmp_path / f"claims_{side}.png"
    path.write_bytes(_png_header(side, side))
    assert path.stat().st_size < 200
    monkeypatch.setattr(files.cv2, "imdecode", lambda *a: pytest.fail("the pixels were decoded"))
    for read in (lambda: files.read_image(path, lenient=True), lambda: files.read_mask(path)):
        with pytest.raises(DataError, match=rf"claims_{side}\.png: image of .*larger than the limit of {MAX_IMAGE_SIDE}"):
            read()


def test_opencv_errors_become_data_errors(tmp_path: Path, monkeypatch):
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a.png").write_bytes(png.tobytes())

    def broken(*args):
        raise cv2.error("OpenCV(4.x) imdecode: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(files.cv2, "imdecode", broken)
    with pytest.raises(DataError, match=r"a\.png: file does not decode as an image"):
        files.read_image(tmp_path / "a.png")


def test_file_without_an_image_header_is_refused_before_opencv(tmp_path: Path, monkeypatch):
    (tmp_path / "x.tif").write_bytes(b"not an image at all" * 10)
    monkeypatch.setattr(files.cv2, "imdecode", lambda *a: pytest.fail("an unchecked file reached OpenCV"))
    with pytest.raises(DataError, match=r"x\.tif: file does not decode as an image"):
        files.read_image(tmp_path / "x.tif")


def test_prepare_skip_bad_and_predict_skip_a_decompression_bomb(tmp_path: Path):
    from gliomaseg.data.prepare import prepare
    from gliomaseg.data.synth import generate

    root = tmp_path / "data"
    generate(root, patients=2, slices=4, seed=1)
    patient = sorted(p for p in root.iterdir())[0]
    bomb = patient / f"{patient.name}_2.tif"
    bomb.write_bytes(_png_header(60000, 60000))
    result = prepare(root, tmp_path / "prepared", skip_bad=True, plots=False)
    assert str(bomb) in set(result.skipped["path"].astype(str))
    with pytest.raises(DataError, match="larger than the limit"):
        prepare(root, tmp_path / "strict", plots=False)


def _mutations(seed: int, base: bytes, count: int, header: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, min(header, len(data))))
            data[at] = int(rng.integers(0, 256)) if rng.random() < 0.7 else (0xFF if rng.random() < 0.5 else 0x7F)
        out.append(bytes(data))
    return out


def test_fuzzed_headers_give_data_errors_and_never_decode_past_the_limit(tmp_path: Path, monkeypatch):
    """Seeded mutations of PNG, TIFF and NIfTI headers: each file reads or gets a DataError, no other exception, and no
    decoded array exceeds the side or byte limits."""
    import nibabel as nib
    import tifffile

    decoded: list[tuple[int, ...]] = []
    real_imdecode = cv2.imdecode

    def recording(raw, flags):
        array = real_imdecode(raw, flags)
        if array is not None:
            decoded.append(array.nbytes)
        return array

    monkeypatch.setattr(files.cv2, "imdecode", recording)
    budget = 1 << 20  # a small budget: headers mutated to claim large sizes are refused fast, and the check is exercised
    monkeypatch.setattr(files, "MAX_DECODED_BYTES", budget)
    monkeypatch.setattr(nifti, "MAX_DECODED_BYTES", budget)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    tif = buffer.getvalue()
    volume = nib.Nifti1Image(rng.integers(0, 255, (8, 8, 2, 3), np.uint8), np.eye(4))
    nii = volume.to_bytes()
    started = time.monotonic()
    outcomes = {"read": 0, "refused": 0}
    cases = [(".png", m) for m in _mutations(1, png, 100, 40)] + [(".tif", m) for m in _mutations(2, tif, 100, 200)]
    for k, (suffix, data) in enumerate(cases):
        path = tmp_path / f"f{k}{suffix}"
        path.write_bytes(data)
        for read in (lambda: files.read_image(path, lenient=True, allow_grayscale=True, allow_16bit=True), lambda: files.read_mask(path)):
            try:
                read()
                outcomes["read"] += 1
            except DataError:
                outcomes["refused"] += 1
    for k, data in enumerate(_mutations(3, nii, 100, 348)):
        path = tmp_path / f"v{k}.nii"
        path.write_bytes(data)
        try:
            slices, _ = nifti.read_volume([path])
            assert sum(s.nbytes for s in slices) <= budget
            outcomes["read"] += 1
        except DataError:
            outcomes["refused"] += 1
    assert decoded and max(decoded) <= budget
    assert outcomes["read"] > 0 and outcomes["refused"] > 0  # the mutations did break some files and spare others
    assert time.monotonic() - started < 120  # bounded: a decoder that hangs or decodes a huge claim would blow it


# --- item 1 (volumes) and item 5: the NIfTI budget from the header, robust scaling ---------------------------------

def _header_only_nifti(path: Path, shape: tuple[int, ...], dtype, slope: float = 1.0) -> Path:
    """A .nii whose header claims ``shape`` x ``dtype`` (with ``scl_slope``) over a few bytes of data: a tiny file."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(slope, 0.0)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 1024)
    return path


@pytest.mark.parametrize("shape, dtype, slope", [
    ((1024, 1024, 64, 3), np.uint8, 2.0),     # 201 M voxels read as float32: 805 MB
    ((64, 64, 8, 8000), np.float64, 1.0),     # every dimension counts, not the first three: 1000 MiB
])
def test_nifti_over_the_memory_budget_is_refused_from_its_header(tmp_path: Path, monkeypatch, shape, dtype, slope):
    path = _header_only_nifti(tmp_path / "big.nii", shape, dtype, slope)
    monkeypatch.setattr(nifti, "_voxels", lambda *a, **k: pytest.fail("voxels were read"))
    with pytest.raises(DataError, match=r"big\.nii: volume of shape .* decodes to \d+ MiB, more than the memory budget of 512 MiB"):
        nifti.read_volume([path])


def test_truth_volume_of_another_shape_is_refused_before_its_voxels_are_read(tmp_path: Path, monkeypatch):
    import nibabel as nib

    image = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.uint8), np.eye(4)), str(image))
    _, geometry = nifti.read_volume([image])
    mask = _header_only_nifti(tmp_path / "case_mask.nii", (1024, 1024, 100), np.uint8)
    monkeypatch.setattr(nifti, "_voxels", lambda *a, **k: pytest.fail("voxels were read"))
    with pytest.raises(DataError, match=r"case_mask\.nii: mask volume of shape \(1024, 1024, 100\) does not match"):
        nifti.read_mask_volume(mask, geometry)


def test_one_infinite_voxel_does_not_whiten_a_channel(tmp_path: Path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = rng.uniform(100, 1000, (16, 16, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "clean.nii.gz"))
    data[0, 0, 0, 1] = -np.inf
    data[1, 1, 1, 2] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "dirty.nii.gz"))
    with pytest.warns(UserWarning, match="scaled per channel"):
        clean, _ = nifti.read_volume([tmp_path / "clean.nii.gz"])
    with pytest.warns(UserWarning, match=r"dirty\.nii\.gz: 1 non-finite voxel\(s\)"):
        dirty, _ = nifti.read_volume([tmp_path / "dirty.nii.gz"])
    clean, dirty = np.stack(clean).astype(int), np.stack(dirty).astype(int)
    assert 100 < dirty[..., 1].mean() < 160  # with the minimum (-inf) every voxel of the channel became 255
    assert (np.abs(clean - dirty) > 1).sum() <= 2  # only the two non-finite voxels (now 0) differ


# --- item 8: every numeric option is checked where it is parsed ------------------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["predict", "--input", "x.tif", "--out", "o", "--threshold", "2"], "--threshold"),
    (["predict", "--input", "x.tif", "--out", "o", "--threshold", "-1"], "--threshold"),
    (["predict", "--input", "x.tif", "--out", "o", "--threshold", "nan"], "--threshold"),
    (["predict", "--input", "x.tif", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["predict", "--input", "x.tif", "--out", "o", "--fps", "0"], "--fps"),
    (["predict", "--input", "x.tif", "--out", "o", "--fps", "-1"], "--fps"),
    (["gif", "--input", "x", "--out", "o.gif", "--fps", "inf"], "--fps"),
    (["evaluate", "--checkpoint", "c", "--csv", "c.csv", "--out", "o", "--batch-size", "-3"], "--batch-size"),
    (["serve", "--threshold", "2"], "--threshold"),
    (["serve", "--threshold", "-1"], "--threshold"),
    (["serve", "--max-upload-mb", "-5"], "--max-upload-mb"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--max-image-side", "100000"], "--max-image-side"),
    (["prepare", "--data-path", "d", "--out", "o", "--train-size", "1.5"], "--train-size"),
    (["prepare", "--data-path", "d", "--out", "o", "--folds", "1"], "--folds"),
    (["synth", "--out", "o", "--patients", "0"], "--patients"),
])
def test_bad_numbers_are_refused_at_the_cli_with_one_message(argv, option, capsys):
    from gliomaseg.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err


# --- item 14: one line for every failure a user can cause --------------------------------------------------------

def test_csv_with_empty_cells_and_a_patient_named_na(tmp_path: Path):
    from gliomaseg.data.sources import open_source

    image, other = tmp_path / "s_1.png", tmp_path / "s_2.png"
    for path in (image, other):
        cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a.csv").write_text(f"patient,image_path,mask_path,slice\nNA,{image},,1\nNA,{other},,\n")
    patients, _ = open_source(tmp_path / "a.csv")
    assert [p.name for p in patients] == ["NA"] and [s.mask_path for s in patients[0].slices] == [None, None]
    assert files.read_slices_csv(tmp_path / "a.csv", require_mask=False)["slice"].tolist()[0] == 1
    with pytest.raises(DataError, match=r"a\.csv: row 2 has an empty mask_path"):
        files.read_slices_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text(f"patient,image_path\n,{image}\n")
    with pytest.raises(DataError, match=r"b\.csv: row 2 has an empty patient"):
        open_source(tmp_path / "b.csv")


def test_empty_checkpoint_and_model_files_get_one_line(tmp_path: Path, capsys):
    from gliomaseg.cli import main

    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "empty.onnx").write_bytes(b"")
    for option, name in (("--checkpoint", "empty.ckpt"), ("--model", "empty.onnx")):
        assert main(["predict", option, str(tmp_path / name), "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{name}: not a loadable" in err


def test_first_line_of_an_exception_without_a_message():
    from gliomaseg.core.errors import first_line

    assert first_line(IndexError()) == "IndexError"
    assert first_line(ValueError("bad\nsecond line")) == "ValueError: bad"


def test_os_errors_end_with_one_line_naming_the_file(tmp_path: Path, capsys, monkeypatch):
    from gliomaseg import cli

    def read_only(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "predictions.csv"))

    monkeypatch.setitem(cli.COMMANDS, "gif", read_only)
    assert cli.main(["gif", "--input", str(tmp_path), "--out", str(tmp_path / "a.gif")]) == 2
    err = capsys.readouterr().err
    assert err == f"gliomaseg gif: error: {tmp_path / 'out' / 'predictions.csv'}: Permission denied\n"


# --- items 6 and 7: broken weights, non-finite outputs and graphs of the wrong shape are refused ----------------------

INFO = {"arch": "unet", "encoder": "resnet18", "image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "threshold": 0.5}


def _onnx_model(path: Path, input_shape: list, nodes: list, output_shape: list, extra=()) -> Path:
    import json

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output_shape)], initializer=list(extra))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "gliomaseg", json.dumps(INFO)
    onnx.save(model, str(path))
    return path


def _mean_over_channels(out: str = "logits"):
    from onnx import helper

    return helper.make_node("ReduceMean", ["images"], [out], axes=[1], keepdims=1)


def test_onnx_graphs_that_do_not_fit_are_refused_when_opened(tmp_path: Path):
    from onnx import helper

    from gliomaseg.core.errors import CheckpointError
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    identity = helper.make_node("Identity", ["images"], ["logits"])
    pool = [_mean_over_channels("m"), helper.make_node("MaxPool", ["m"], ["logits"], kernel_shape=[4, 4], strides=[4, 4])]
    flat = [helper.make_node("Flatten", ["images"], ["f"]), helper.make_node("ReduceMean", ["f"], ["logits"], axes=[1], keepdims=0)]
    bad = {
        "three_channels_out": (["batch", 3, 32, 32], [identity], ["batch", 3, 32, 32], r"output has shape \(batch, 3, 32, 32\)"),
        "eight_by_eight_out": (["batch", 3, 32, 32], pool, ["batch", 1, 8, 8], r"output has shape \(batch, 1, 8, 8\)"),
        "one_channel_in": (["batch", 1, 32, 32], [identity], ["batch", 1, 32, 32], r"input has shape \(batch, 1, 32, 32\)"),
        "fixed_size_in": (["batch", 3, 64, 64], [_mean_over_channels()], ["batch", 1, 64, 64], r"input has shape \(batch, 3, 64, 64\)"),
        "fixed_batch_in": ([1, 3, 32, 32], [_mean_over_channels()], [1, 1, 32, 32], r"free batch dimension"),
        "rank_one_out": (["batch", 3, 32, 32], flat, ["batch"], r"output has shape \(batch\)"),
    }
    for name, (shape_in, nodes, shape_out, words) in bad.items():
        path = _onnx_model(tmp_path / f"{name}.onnx", shape_in, nodes, shape_out)
        with pytest.raises(CheckpointError, match=rf"{name}\.onnx: .*{words}"):
            OnnxPredictor(path, micro_batch=1)
    good = OnnxPredictor(_onnx_model(tmp_path / "good.onnx", ["batch", 3, 32, 32], [_mean_over_channels()], ["batch", 1, 32, 32]),
                         micro_batch=2)
    assert good.probabilities(np.zeros((3, 32, 32, 3), np.uint8)).shape == (3, 32, 32)


def test_onnx_model_with_nan_output_is_refused(tmp_path: Path):
    from onnx import helper, numpy_helper

    from gliomaseg.core.errors import CheckpointError
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    nan = numpy_helper.from_array(np.array([np.nan], np.float32), "nan")
    nodes = [_mean_over_channels("m"), helper.make_node("Mul", ["m", "nan"], ["logits"])]
    path = _onnx_model(tmp_path / "nan.onnx", ["batch", 3, 32, 32], nodes, ["batch", 1, 32, 32], [nan])
    with pytest.raises(CheckpointError, match=r"nan\.onnx: the model gives non-finite logits"):
        OnnxPredictor(path, micro_batch=1).probabilities(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(CheckpointError, match=r"nan\.onnx: the model gives non-finite logits"):
        OnnxPredictor(path, use_cache=False)  # the probe runs it too


def test_checkpoint_with_nan_weights_is_refused_and_not_exported(tmp_path: Path):
    import torch

    from gliomaseg.core.errors import CheckpointError
    from gliomaseg.export.onnx import export_onnx
    from gliomaseg.inference.torch_backend import TorchPredictor
    from gliomaseg.modeling.spec import ModelInfo, read_checkpoint

    path = tmp_path / "nan.ckpt"
    torch.save({"state_dict": {"model.conv.weight": torch.tensor([1.0, float("nan")])}, "hyper_parameters": INFO}, path)
    with pytest.raises(CheckpointError, match=r"nan\.ckpt: weight conv\.weight holds NaN or infinite values"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        export_onnx(path, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.ckpt"]
    conv = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(float("nan"))
    predictor = TorchPredictor(conv, ModelInfo.from_dict(INFO, "x"), channels_last=False)
    with pytest.raises(CheckpointError, match="non-finite logits"):
        predictor.probabilities(np.zeros((1, 32, 32, 3), np.uint8))


# --- items 1, 2, 3: the viewer --------------------------------------------------------------------------------------

def _png(height: int, width: int, value: int = 200) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), value, np.uint8))[1].tobytes()


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    from conftest import BrightPredictor
    from serve_helpers import live_server

    from gliomaseg.serve.app import create_app
    from gliomaseg.serve.limits import ServeLimits

    temp_root = tmp_path_factory.mktemp("viewer-tmp")
    limits = ServeLimits(max_upload_bytes=2 << 20, max_unpacked_bytes=4 << 20, max_files=60, max_image_side=512,
                         max_decoded_bytes=8 << 20, max_results=8, max_result_bytes=4 << 20)
    app = create_app(BrightPredictor(), limits=limits, temp_root=temp_root, model_label="bright")
    with live_server(app) as base:
        yield base, app


def _post(base: str, files: list[tuple[str, bytes]], headers: dict | None = None) -> tuple[int, dict, dict]:
    import json

    from serve_helpers import multipart, request

    body, content_type = multipart(files)
    status, got, raw = request(f"{base}/api/segment", body, {"Content-Type": content_type, **(headers or {})})
    return status, {k.lower(): v for k, v in got.items()}, json.loads(raw)


def test_viewer_answers_only_its_own_host_and_origin(viewer):
    base, _ = viewer
    port = base.rsplit(":", 1)[1]
    files_ = [("s_1.png", _png(32, 32))]
    assert _post(base, files_)[0] == 200  # no Origin (curl, scripts)
    assert _post(base, files_, {"Origin": f"http://127.0.0.1:{port}"})[0] == 200  # the page itself
    assert _post(base, files_, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})[0] == 200
    for headers, status, words in (
        ({"Origin": "http://evil.example"}, 403, "another site"),
        ({"Origin": "null"}, 403, "another site"),
        ({"Origin": f"http://127.0.0.1:{int(port) + 1}"}, 403, "another site"),
        ({"Host": "evil.example"}, 421, "not served here"),
        ({"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}, 421, "not served here"),  # DNS rebinding
    ):
        got, head, body = _post(base, files_, headers)
        assert got == status and words in body["error"], (headers, body)
        assert "default-src 'self'" in head["content-security-policy"]
    from serve_helpers import request

    assert request(f"{base}/api/health", headers={"Host": "evil.example"})[0] == 421  # reading replies after a rebind


def test_chunked_upload_over_the_limit_is_a_413_with_the_security_headers(viewer):
    import http.client
    import json

    from serve_helpers import multipart

    base, _ = viewer
    host, port = base.removeprefix("http://").split(":")
    body, content_type = multipart([("big.png", b"\0" * (6 << 20))])
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/api/segment", body=iter([body[i:i + (1 << 16)] for i in range(0, len(body), 1 << 16)]),
                       headers={"Content-Type": content_type}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "larger than the limit" in json.loads(response.read())["error"]
    assert "default-src 'self'" in response.getheader("content-security-policy")
    connection.close()


def test_zip_folders_that_clash_stay_apart_and_a_file_beside_its_folder_is_no_500(viewer):
    base, _ = viewer
    image = _png(32, 32)
    status, _, body = _post(base, [("two.zip", _zip({"Patient_é/a_1.png": image, "Patient_ü/a_1.png": _png(32, 32, 50)}))])
    assert status == 200 and len(body["cases"]) == 2, body
    status, _, body = _post(base, [("sites.zip", _zip({"siteA/P1/P1_1.png": image, "siteB/P1/P1_1.png": image}))])
    assert status == 200 and sorted(c["summary"]["patient"] for c in body["cases"]) == ["P1", "siteB_P1"], body
    status, _, body = _post(base, [("clash.zip", _zip({"P": image, "P/P_1.png": image}))])
    assert status == 200, body


def test_viewer_masks_and_volumes_are_held_to_the_limits_before_decoding(viewer, tmp_path: Path):
    base, _ = viewer
    status, _, body = _post(base, [("s_1.png", _png(32, 32)), ("s_1_mask.png", _png_header(19000, 19000))])
    assert status == 413 and "s_1_mask.png" in body["error"], body
    status, _, body = _post(base, [("s_1.png", _png(32, 32)), ("s_1_mask.png", _png(600, 600))])
    assert status == 413 and "s_1_mask.png" in body["error"] and "512" in body["error"], body
    import gzip

    import nibabel as nib

    volume = gzip.compress(nib.Nifti1Image(np.zeros((16, 16, 4, 3), np.uint8), np.eye(4)).to_bytes())
    mask = _header_only_nifti(tmp_path / "vol_mask.nii", (512, 512, 64), np.uint8).read_bytes()  # 16 MiB over 1 KB
    status, _, body = _post(base, [("vol.nii.gz", volume), ("vol_mask.nii", mask)])
    assert status == 413 and "vol_mask.nii" in body["error"] and "memory limit" in body["error"], body


def test_results_in_memory_are_bounded_by_bytes(viewer):
    base, app = viewer
    for _ in range(6):  # each result holds 6 slices of 512x512 RGB and their masks: about 6 MiB against a 4 MiB budget
        status, _, body = _post(base, [(f"p_{k}.png", _png(512, 512)) for k in range(1, 7)])
        assert status == 200, body
        assert app.state.store.bytes_kept <= max(4 << 20, app.state.store.nbytes(app.state.store.get(body["id"]).cases))
    assert len(app.state.store) == 1  # the newest is kept even when alone over the budget, the others went


# --- items 9, 10, 11, 13, 15: outputs that mix, go stale or name the machine's folders -------------------------------

@pytest.fixture
def two_sites(tmp_path: Path) -> list[Path]:
    slices = []
    for site in ("siteA", "siteB"):
        folder = tmp_path / "in" / site / "P1"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "P1_1.png"), np.full((32, 32, 3), 200 if site == "siteA" else 20, np.uint8))
        slices.append(folder / "P1_1.png")
    return slices


def test_two_patients_of_one_name_from_two_folders_are_refused(two_sites: list[Path], tmp_path: Path, bright_predictor):
    from gliomaseg.predict.files import predict

    with pytest.raises(DataError, match=r"patient 'P1' also comes from .*siteA/P1/P1_1\.png"):
        predict(bright_predictor, two_sites, tmp_path / "out", gifs=False)
    assert not (tmp_path / "out" / "predictions.csv").exists()
    one = predict(bright_predictor, two_sites[:1], tmp_path / "out", gifs=False)
    assert len(one.predictions) == 1


def test_output_folder_inside_the_input_is_refused(tmp_path: Path, bright_predictor):
    from gliomaseg.predict.files import predict

    patient = tmp_path / "P2"
    patient.mkdir()
    for k in (1, 2):
        cv2.imwrite(str(patient / f"P2_{k}.png"), np.full((32, 32, 3), 100, np.uint8))
    for out in (patient, patient / "pred"):
        with pytest.raises(DataError, match="inside the input folder"):
            predict(bright_predictor, patient, out, gifs=False)
    assert sorted(p.name for p in patient.iterdir()) == ["P2_1.png", "P2_2.png"]


def test_a_rerun_replaces_the_previous_run_and_a_failed_one_leaves_it(tmp_path: Path, bright_predictor, monkeypatch):
    from gliomaseg.predict import files as predict_module

    source = tmp_path / "in"
    for patient, count in (("A", 3), ("B", 2)):
        (source / patient).mkdir(parents=True)
        for k in range(1, count + 1):
            cv2.imwrite(str(source / patient / f"{patient}_{k}.png"), np.full((32, 32, 3), 90 * k % 255, np.uint8))
    (source / "A" / "A_9.png").write_bytes(b"broken")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not written by gliomaseg: never touched
    first = predict_module.predict(bright_predictor, source, out, gifs=False)
    assert len(first.predictions) == 5 and (out / "skipped.csv").is_file()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (source / "A" / "A_9.png").unlink()
    shutil_rmtree(source / "B")

    def killed(*args, **kwargs):  # a run that dies half way (an error, or kill -9 at this point)
        (args[0] / "A").mkdir()
        (args[0] / "A" / "A_1_pred.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "_predict_into", killed)
    with pytest.raises(KeyboardInterrupt):
        predict_module.predict(bright_predictor, source, out, gifs=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the previous run, whole
    monkeypatch.undo()
    (out / ".gliomaseg-run-stale").mkdir()  # what a kill -9 leaves: removed by the next run
    second = predict_module.predict(bright_predictor, source, out, gifs=False)
    assert len(second.predictions) == 3
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [".gliomaseg-predict.json", "A/A_1_overlay.png", "A/A_1_pred.png", "A/A_2_overlay.png", "A/A_2_pred.png",
                     "A/A_3_overlay.png", "A/A_3_pred.png", "notes.txt", "patients.csv", "predictions.csv",
                     "report.html"]  # no B, no skipped.csv


def test_a_run_killed_while_its_files_move_in_is_cleaned_by_the_next(tmp_path: Path, monkeypatch):
    """The swap is many renames: killed half way, both runs' files stay listed, and the next run leaves only its own."""
    import json
    import os

    from gliomaseg.core import io as io_module

    out = tmp_path / "out"

    def run(files: dict[str, str]) -> None:
        with io_module.run_folder(out, "demo") as work:
            for rel, text in files.items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                (work / rel).write_text(text)

    run({"A/a.png": "1", "table.csv": "1"})
    real = os.replace

    def dies_on_b(src, dst, *args, **kwargs):
        if Path(dst).name == "b.png":
            raise KeyboardInterrupt  # kill -9 between two renames
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(io_module.os, "replace", dies_on_b)
    with pytest.raises(KeyboardInterrupt):
        run({"B/b.png": "2", "C/c.png": "2", "table.csv": "2"})
    manifest = json.loads((out / ".gliomaseg-demo.json").read_text())
    assert manifest["complete"] is False and set(manifest["files"]) >= {"A/a.png", "B/b.png", "C/c.png", "table.csv"}
    monkeypatch.undo()
    run({"D/d.png": "3"})
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [".gliomaseg-demo.json", "D/d.png"]  # nothing of the first two runs, no empty folder left
    assert sorted(p.name for p in out.iterdir()) == [".gliomaseg-demo.json", "D"]
    assert json.loads((out / ".gliomaseg-demo.json").read_text()) == {"command": "demo", "files": ["D/d.png"]}


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path: Path):
    import fcntl
    import os

    from gliomaseg.core import io as io_module
    from gliomaseg.core.errors import ConfigError

    out = tmp_path / "out"
    with io_module.run_folder(out, "predict") as work:
        (work / "a.csv").write_text("1")
        hidden = list(out.glob(f"{io_module.RUN_PREFIX}*"))
        with pytest.raises(ConfigError, match=r"out: another gliomaseg run is writing into this folder"):
            with io_module.run_folder(out, "prepare"):
                pass
        assert list(out.glob(f"{io_module.RUN_PREFIX}*")) == hidden  # the first run's work left alone
    assert (out / "a.csv").read_text() == "1"
    handle = os.open(out, os.O_RDONLY)  # the lock goes with its holder: once released, the next run proceeds
    fcntl.flock(handle, fcntl.LOCK_EX)
    os.close(handle)
    with io_module.run_folder(out, "predict") as work:
        (work / "b.csv").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [".gliomaseg-predict.json", "b.csv"]


def test_an_evaluation_killed_half_way_leaves_the_previous_one_whole(tmp_path: Path, monkeypatch):
    import pandas as pd

    from gliomaseg.evaluation import charts, summary
    from gliomaseg.evaluation.summary import SCORE_FILES, write_scores

    monkeypatch.setattr(summary, "summary_markdown", lambda values: f"{values['patients']} patients")  # the tables alone
    out = tmp_path / "eval"
    patients = pd.DataFrame({"patient": ["A", "B"], "dice_3d": [0.5, 0.9]})
    slices = pd.DataFrame({"patient": ["A", "B"], "image_path": [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]})
    write_scores(out, {"patients": 2}, slices, patients)
    before = {name: (out / name).read_bytes() for name in SCORE_FILES}

    def killed(*args, **kwargs):  # the chart is the last of the five: the tables before it are written by now
        raise KeyboardInterrupt

    monkeypatch.setattr(charts, "plot_bars", killed)
    with pytest.raises(KeyboardInterrupt):
        write_scores(out, {"patients": 1}, slices.iloc[:1], patients.iloc[:1])
    assert {name: (out / name).read_bytes() for name in SCORE_FILES} == before
    assert pd.read_csv(out / "slices.csv")["image_path"].tolist() == ["../a.tif", "../b.tif"]  # relative to out


def test_two_slices_of_one_name_are_refused_naming_both(tmp_path: Path, bright_predictor):
    from gliomaseg.data.sources import open_source
    from gliomaseg.predict.files import predict

    patient = tmp_path / "in" / "P"
    patient.mkdir(parents=True)
    cv2.imwrite(str(patient / "P_1.png"), np.full((32, 32, 3), 200, np.uint8))
    cv2.imwrite(str(patient / "P_1.tif"), np.full((32, 32, 3), 20, np.uint8))  # would write P_1_pred.png too
    cv2.imwrite(str(patient / "P_2.png"), np.full((32, 32, 3), 90, np.uint8))
    with pytest.raises(DataError, match=r"slice 'P_1' of patient 'P' also comes from .*P_1\.(png|tif)") as error:
        open_source(tmp_path / "in")
    assert "P_1.png" in str(error.value) and "P_1.tif" in str(error.value)
    with pytest.raises(DataError):
        predict(bright_predictor, tmp_path / "in", tmp_path / "out", gifs=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
    renamed, _ = open_source(tmp_path / "in", rename_duplicates=True)  # the viewer's way
    assert sorted(item.name for item in renamed[0].slices) == ["P_1", "P_1-2", "P_2"]
    (patient / "P_1.tif").unlink()
    patients, _ = open_source(tmp_path / "in")
    assert [item.name for item in patients[0].slices] == ["P_1", "P_2"]
    image = patient / "P_2.png"
    (tmp_path / "twice.csv").write_text(f"patient,image_path\nP,{image}\nP,{image}\n")
    with pytest.raises(DataError, match=r"P_2\.png: listed twice for patient 'P'"):
        open_source(tmp_path / "twice.csv")


def test_several_folders_are_refused_as_folders(tmp_path: Path):
    from gliomaseg.data.sources import open_source

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=r"a: a folder goes alone"):
        open_source([tmp_path / "a", tmp_path / "b"])


def test_a_bad_mask_is_listed_under_its_image_with_the_mask_named(tmp_path: Path, bright_predictor):
    import pandas as pd

    from gliomaseg.predict.files import predict

    patient = tmp_path / "in" / "P"
    patient.mkdir(parents=True)
    for k in (1, 2):
        cv2.imwrite(str(patient / f"P_{k}.png"), np.full((32, 32, 3), 60 * k, np.uint8))
    cv2.imwrite(str(patient / "P_2_mask.png"), np.full((32, 32), 77, np.uint8))  # neither 0 nor 255: not a mask
    result = predict(bright_predictor, tmp_path / "in", tmp_path / "out", gifs=False)
    assert len(result.predictions) == 1
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped["path"].map(lambda p: Path(p).name).tolist() == ["P_2.png"]
    assert "P_2_mask.png" in skipped["problem"][0]  # the file at fault is named, not only the image


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_prepare_rerun_with_fewer_folds_leaves_no_old_fold(tmp_path: Path):
    from gliomaseg.data.prepare import prepare
    from gliomaseg.data.synth import generate

    generate(tmp_path / "data", patients=4, slices=3, seed=2)
    prepare(tmp_path / "data", tmp_path / "prep", folds=4, plots=False)
    assert (tmp_path / "prep" / "data_fold3_val.csv").is_file()
    result = prepare(tmp_path / "data", tmp_path / "prep", folds=2, plots=False)
    assert not any((tmp_path / "prep").glob("data_fold[23]_*.csv")) and (tmp_path / "prep" / "data_fold1_val.csv").is_file()
    assert all(p.is_file() and p.parent == tmp_path / "prep" for p in result.written)


def test_convert_leaves_no_temporary_file_when_killed(tmp_path: Path, monkeypatch):
    from gliomaseg.data import convert, nifti
    from gliomaseg.data.synth import generate

    generate(tmp_path / "data", patients=2, slices=3, seed=2, size=32)
    real = nifti.write_mask_volume

    def die_on_the_mask(*args):
        raise KeyboardInterrupt  # the image is written, its mask is not

    monkeypatch.setattr(nifti, "write_mask_volume", die_on_the_mask)
    with pytest.raises(KeyboardInterrupt):
        convert.convert_to_nifti(tmp_path / "data", tmp_path / "nifti")
    assert list((tmp_path / "nifti").iterdir()) == []  # no hidden temp, no image without its mask
    monkeypatch.setattr(nifti, "write_mask_volume", real)
    table = convert.convert_to_nifti(tmp_path / "data", tmp_path / "nifti")
    assert all(Path(p).is_file() for p in table["mask"])
    assert "/" not in (tmp_path / "nifti" / "converted.csv").read_text().split("\n", 2)[1].split(",")[3]


def test_predict_outputs_name_no_absolute_path_of_the_working_folder(tmp_path: Path, bright_predictor, monkeypatch):
    from gliomaseg.cli import main

    patient = tmp_path / "work" / "P3"
    patient.mkdir(parents=True)
    for k in (1, 2):
        cv2.imwrite(str(patient / f"P3_{k}.png"), np.full((32, 32, 3), 150, np.uint8))
    monkeypatch.chdir(tmp_path / "work")
    from gliomaseg.inference import backend as predictor_module

    monkeypatch.setattr(predictor_module, "open_predictor", lambda *a, **k: bright_predictor)
    assert main(["predict", "--input", "P3", "--out", "pred"]) == 0
    for path in (tmp_path / "work" / "pred").rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".md", ".html"):
            assert str(tmp_path) not in path.read_text(), path
    assert (tmp_path / "work" / "pred" / "P3" / "P3.gif").is_file()


def test_evaluate_outputs_name_no_absolute_path_of_the_working_folder(tmp_path: Path, bright_predictor, monkeypatch):
    """Issue 22 item 15: slices.csv names the slices relative to the output folder, summary.json the inputs as given."""
    import pandas as pd

    from gliomaseg.data.files import read_slices_csv
    from gliomaseg.data.prepare import prepare
    from gliomaseg.data.synth import generate
    from gliomaseg.evaluation.evaluate import evaluate

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    generate(Path("synth"), patients=3, slices=4, seed=2)
    prepare(Path("synth"), Path("data"), plots=False)
    evaluate(None, Path("data") / "data_val.csv", Path("eval"), predictor=bright_predictor, compare=False)
    for path in (work / "eval").rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".md", ".html"):
            assert str(work) not in path.read_text(), path
    slices = read_slices_csv(work / "eval" / "slices.csv")  # the relative paths still lead to the slices
    val = pd.read_csv(work / "data" / "data_val.csv")
    assert sorted(Path(p).resolve() for p in slices["image_path"]) == sorted(Path(p).resolve() for p in val["image_path"])


def test_experiment_outputs_name_no_absolute_path_of_the_working_folder(tmp_path: Path, monkeypatch):
    """Issue 22 item 15: an experiment's tables, cards, configs and logs name no folder of the machine it ran in."""
    from gliomaseg.data.prepare import prepare
    from gliomaseg.data.synth import generate
    from gliomaseg.experiments.runner import run_experiment

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    generate(Path("synth"), patients=4, slices=6, seed=3)
    prepare(Path("synth"), Path("data"), plots=False)
    Path("one.yaml").write_text("name: one\ndescription: one tiny run\nbase: {model: unet, encoder: resnet18}\n"
                                "runs:\n  - {name: dice, loss: dice}\n")
    results = run_experiment(Path("one.yaml"), Path("data"), Path("exp"), epochs=1, image_size=64,
                             extra_options={"batch_size": 4, "limit_train_batches": 2, "workers": 0, "progress": False,
                                            "precision": "32"})
    assert (results["status"] == "done").all()
    checked = 0
    for path in (work / "exp").rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".md", ".html", ".yaml", ".txt"):
            assert str(work) not in path.read_text(errors="ignore"), path
            checked += 1
    assert checked >= 8 and (work / "exp" / "one" / "dice" / "MODEL_CARD.md").is_file()
