from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from gliomaseg.cli import main
from gliomaseg.core.errors import CheckpointError, DataError
from gliomaseg.data.sources import open_source
from gliomaseg.inference.postprocess import PostProcess, process_patient
from gliomaseg.inference.torch_backend import load_checkpoint
from gliomaseg.inference.tta import tta_probabilities
from gliomaseg.predict.files import gif_from_folder, predict


@pytest.fixture(scope="module")
def predictor(trained_run: Path):
    return load_checkpoint(trained_run / "best.ckpt")


def _patient(synth_root: Path) -> Path:
    return sorted(synth_root.iterdir())[0]


def test_predict_patient_folder_outputs(predictor, synth_root: Path, tmp_path: Path):
    patient = _patient(synth_root)
    result = predict(predictor, patient, tmp_path, fps=4)
    images = sorted((p for p in patient.glob("*.tif") if not p.stem.endswith("_mask")), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert len(result.predictions) == len(images)
    assert result.predictions["slice"].tolist() == sorted(result.predictions["slice"].tolist())
    for row in result.predictions.itertuples():
        mask = cv2.imread(row.mask_out, cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(row.overlay_out)
        assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 255}  # model runs at 64, mask at input size
        assert overlay.shape == (256, 256, 3)
        truth = (cv2.imread(str(Path(row.image_path).with_name(Path(row.image_path).stem + "_mask.tif")), cv2.IMREAD_UNCHANGED) > 0)
        predicted = mask > 0
        expected_dice = 1.0 if not (truth.any() or predicted.any()) else 2 * (truth & predicted).sum() / (truth.sum() + predicted.sum())
        assert row.dice == pytest.approx(expected_dice) and row.tp == (truth & predicted).sum()
        assert 0.0 <= row.max_probability <= 1.0 and (row.max_probability > 0.5) == predicted.any()
    frames = iio.imread(result.patients["gif"][0], index=None)
    assert frames.shape[0] == len(images)
    overlays = [cv2.cvtColor(cv2.imread(r), cv2.COLOR_BGR2RGB).astype(float) for r in result.predictions["overlay_out"]]
    for i, frame in enumerate(frames):  # frame i is the overlay of slice i (numeric order)
        errors = [np.abs(frame[..., :3].astype(float) - o).mean() for o in overlays]
        assert int(np.argmin(errors)) == i
    row = result.patients.iloc[0]
    assert row["tumour_volume_voxels"] == result.predictions["tumour_pixels"].sum()
    assert "dice_3d" in result.patients


def test_overlay_draws_prediction_yellow_and_truth_red_on_grey_flair():
    from gliomaseg.data.overlay import PREDICTION_COLOUR, TRUTH_COLOUR, overlay_contours

    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 1] = 90  # FLAIR
    image[..., 0] = 200  # pre-contrast: not shown
    truth = np.zeros((64, 64), np.uint8)
    truth[10:30, 10:30] = 1
    prediction = np.zeros_like(truth)
    prediction[35:55, 35:55] = 1
    out = overlay_contours(image, prediction=prediction, truth=truth)
    assert tuple(out[10, 20]) == TRUTH_COLOUR == (230, 30, 30) and tuple(out[35, 45]) == PREDICTION_COLOUR == (255, 215, 0)
    assert tuple(out[11, 20]) == TRUTH_COLOUR  # 2 px wide
    assert tuple(out[20, 20]) == (90, 90, 90)  # contours, not filled, on grey FLAIR
    assert tuple(overlay_contours(image, background="composite")[20, 20]) == (200, 90, 0)


def test_predict_inputs_of_every_kind(predictor, synth_root: Path, prepared: Path, tmp_path: Path):
    patient = _patient(synth_root)
    one = next(p for p in patient.glob("*_3.tif"))
    assert len(predict(predictor, one, tmp_path / "one").predictions) == 1
    root = predict(predictor, synth_root, tmp_path / "root", gifs=False)
    assert root.predictions["patient"].nunique() == 6
    csv = predict(predictor, prepared / "data_val.csv", tmp_path / "csv", gifs=False)
    assert len(csv.predictions) == len(pd.read_csv(prepared / "data_val.csv"))
    png = tmp_path / "slice_7.png"
    big = cv2.resize(tifffile.imread(one), (300, 300))
    cv2.imwrite(str(png), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    result = predict(predictor, png, tmp_path / "png")
    mask = cv2.imread(result.predictions["mask_out"][0], cv2.IMREAD_UNCHANGED)
    assert mask.shape == (300, 300)  # resized back to the input's size


def test_onnx_agrees_with_pytorch_and_skips_torch(onnx_model: Path, predictor, synth_root: Path, tmp_path: Path):
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    patient = _patient(synth_root)
    images = np.stack([cv2.resize(tifffile.imread(p), (64, 64), interpolation=cv2.INTER_AREA)
                       for p in sorted(patient.glob("*.tif")) if not p.stem.endswith("_mask")])
    # A threshold that marks about a tenth of the pixels: the comparison holds positives even for a model
    # that predicts no tumour at its own threshold.
    threshold = float(np.quantile(predictor.probabilities(images), 0.9))
    torch_result = predict(predictor, patient, tmp_path / "t", gifs=False, overlays=False, threshold=threshold)
    onnx_result = predict(OnnxPredictor(onnx_model), patient, tmp_path / "o", gifs=False, overlays=False, threshold=threshold)
    torch_masks = [cv2.imread(a, cv2.IMREAD_UNCHANGED) > 0 for a in torch_result.predictions["mask_out"]]
    onnx_masks = [cv2.imread(b, cv2.IMREAD_UNCHANGED) > 0 for b in onnx_result.predictions["mask_out"]]
    assert sum(m.sum() for m in torch_masks) > 0.02 * sum(m.size for m in torch_masks)  # not vacuous
    assert np.mean([(a == b).mean() for a, b in zip(torch_masks, onnx_masks)]) >= 0.999
    code = (
        "import sys; from gliomaseg.cli import main; "
        f"rc = main(['predict', '--model', r'{onnx_model}', '--input', r'{patient}', '--out', r'{tmp_path / 'cli'}']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "cli" / "predictions.csv").is_file()


def test_bf16_on_cpu_holds_bf16_weights_and_keeps_the_masks(trained_run: Path, predictor, synth_root: Path, monkeypatch):
    import torch

    bf16 = load_checkpoint(trained_run / "best.ckpt", precision="bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}  # no per-call autocast of fp32 weights
    assert (bf16.micro_batch, predictor.micro_batch) == (8, 2)
    images = np.stack([cv2.resize(tifffile.imread(p), (64, 64), interpolation=cv2.INTER_AREA)
                       for p in sorted(_patient(synth_root).glob("*.tif")) if not p.stem.endswith("_mask")])
    logits, reference = bf16.logits(images), predictor.logits(images)
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    threshold = float(np.quantile(reference.numpy(), 0.9))  # about a tenth of the pixels marked: not vacuous
    ours, theirs = logits.numpy() > threshold, reference.numpy() > threshold
    dice = 2 * (ours & theirs).sum() / (ours.sum() + theirs.sum())  # over the marked pixels, not the whole image
    assert dice >= 0.95, dice
    assert not torch.equal(logits, reference)  # bf16 arithmetic ran: its rounding shows in the logits
    import gliomaseg.modeling.precision as precision

    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)  # a CPU without bf16 instructions
    with pytest.warns(UserWarning, match="bf16 would be emulated.*--precision 32 is faster here"):
        load_checkpoint(trained_run / "best.ckpt", precision="bf16")


def test_export_cli_and_metadata(trained_run: Path, tmp_path: Path, capsys):
    import json

    import onnx
    import torch

    assert main(["export", "--checkpoint", str(trained_run / "best.ckpt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max abs logit difference" in capsys.readouterr().out
    model = onnx.load(str(tmp_path / "m.onnx"))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["gliomaseg"])
    assert meta["threshold"] == 0.5 and meta["image_size"] == 64 and len(meta["mean"]) == 3
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    card = json.loads({p.key: p.value for p in model.metadata_props}["model_card"])
    from_checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)["model_card"]
    assert card["architecture"] == from_checkpoint["architecture"] == "Unet"
    from gliomaseg.export.onnx import without_paths

    # The same card, with the training machine's paths reduced to file names.
    assert card["training_data"] == without_paths(from_checkpoint["training_data"]) and card["threshold"] == meta["threshold"]
    assert card["training_data"]["train"]["csv"] == "data_train.csv"
    assert "research" in (tmp_path / "m.MODEL_CARD.md").read_text().lower()
    # predict's report and the viewer read the card of a user's export: its validation Dice, said to be optimistic.
    from gliomaseg.inference.onnx_backend import OnnxPredictor
    from gliomaseg.predict.report import model_summary

    predictor = OnnxPredictor(tmp_path / "m.onnx", micro_batch=1)
    dice = from_checkpoint["validation"]["best_val_patient_dice"]["value"]
    assert predictor.card["architecture"] == "Unet"
    assert model_summary(predictor)["validation"] == f"validation mean per-patient Dice {dice:.3f} (the epoch was picked on it: optimistic)"
    from gliomaseg.inference.torch_backend import load_checkpoint

    # A checkpoint's own card says the same (it is stored in the checkpoint, not only in an export).
    assert load_checkpoint(trained_run / "best.ckpt").card["architecture"] == "Unet"
    assert model_summary(load_checkpoint(trained_run / "best.ckpt"))["validation"] == model_summary(predictor)["validation"]


def test_postprocess_removes_speck_and_keeps_tumour():
    masks = [np.zeros((64, 64), np.uint8) for _ in range(4)]
    for m in masks[1:3]:
        cv2.circle(m, (30, 30), 10, 1, -1)
        m[27:30, 28:31] = 0  # a hole inside the tumour
    masks[0][2:4, 2:4] = 1  # a speck on another slice, not connected in 3D
    masks[2][55:58, 55:58] = 1  # a speck beside the tumour
    out = process_patient(masks, PostProcess(min_size=20, fill_holes=True))
    assert out[0].sum() == 0 and out[2][55:58, 55:58].sum() == 0
    assert out[1][28, 29] == 1  # hole filled
    assert out[1].sum() >= masks[1].sum()
    only_3d = process_patient(masks, PostProcess(largest_3d=True))
    assert only_3d[0].sum() == 0 and only_3d[2][55:58, 55:58].sum() == 0 and only_3d[1].sum() == masks[1].sum()
    opened = process_patient([masks[2]], PostProcess(opening=5))[0]
    assert opened[55:58, 55:58].sum() == 0 and opened[30, 30] == 1
    assert PostProcess.parse("min_size=10,fill_holes") == PostProcess(min_size=10, fill_holes=True)
    with pytest.raises(Exception, match="unknown post-processing step"):
        PostProcess.parse("blur")


def test_tta_is_a_valid_mask_and_exact_for_symmetric_models(predictor, synth_root: Path):
    images = np.stack([tifffile.imread(p) for p in sorted(_patient(synth_root).glob("*_[2-4].tif"))])
    images = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in images])
    for mode in ("flip", "d4"):
        probs = tta_probabilities(predictor.probabilities, images, mode)
        assert probs.shape == images.shape[:3] and probs.min() >= 0 and probs.max() <= 1
    brightness = lambda batch: batch.mean(axis=3).astype(np.float32) / 255.0  # an equivariant "model"
    for mode in ("flip", "d4"):
        assert np.allclose(tta_probabilities(brightness, images, mode), brightness(images), atol=1e-6)
    shifted = lambda batch: np.roll(brightness(batch), 1, axis=2)  # not equivariant: TTA must change it
    assert not np.allclose(tta_probabilities(shifted, images, "d4"), shifted(images))


def test_gif_command_sorts_numerically(tmp_path: Path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(1, 13):
        cv2.imwrite(str(folder / f"frame_{k}.png"), np.full((16, 16, 3), k * 20, np.uint8))
    (folder / "notes.txt").write_text("ignored")
    assert main(["gif", "--input", str(folder), "--out", str(tmp_path / "a.gif"), "--fps", "5"]) == 0
    frames = iio.imread(tmp_path / "a.gif", index=None)
    assert len(frames) == 12
    means = [f[..., :3].mean() for f in frames]
    assert means == sorted(means)  # frame_2 before frame_10
    assert iio.immeta(tmp_path / "a.gif", index=0)["duration"] == 200
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        gif_from_folder(tmp_path / "empty", tmp_path / "b.gif")


def test_bad_inputs_in_a_batch_are_skipped_and_listed(predictor, synth_root: Path, tmp_path: Path):
    folder = tmp_path / "patient"
    shutil.copytree(_patient(synth_root), folder)
    (folder / "broken_2.tif").write_bytes(tifffile.imread(next(folder.glob("*_1.tif"))).tobytes()[:100])
    (folder / "truncated_3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "scan_4.nii").write_bytes(b"not a nifti")
    (folder / "notes_8.xyz").write_bytes(b"not supported")
    gray = tmp_path / "patient" / "gray_5.png"
    cv2.imwrite(str(gray), np.full((256, 256), 80, np.uint8))
    deep = tmp_path / "patient" / "deep_6.png"
    cv2.imwrite(str(deep), (np.arange(256 * 256 * 3).reshape(256, 256, 3) % 2000).astype(np.uint16))  # MRI-like 0-2000
    result = predict(predictor, folder, tmp_path / "out")
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    skipped.index = skipped["path"].map(lambda p: Path(p).name)
    assert set(skipped.index) == {"broken_2.tif", "truncated_3.png", "scan_4.nii", "notes_8.xyz", "gray_5.png", "deep_6.png"}
    assert skipped["problem"].str.contains("does not decode|unsupported format|empty|not a readable NIfTI|grayscale|16-bit").all()
    assert "--allow-grayscale" in skipped.loc["gray_5.png", "problem"] and "--allow-16bit" in skipped.loc["deep_6.png", "problem"]
    originals = len(list(_patient(synth_root).glob("*.tif"))) // 2
    assert len(result.predictions) == originals
    with pytest.warns(UserWarning) as caught:
        allowed = predict(predictor, folder, tmp_path / "allowed", allow_grayscale=True, allow_16bit=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "gray_5.png: grayscale slice replicated" in messages and "deep_6.png: 16-bit image, scaled per patient" in messages
    done = {Path(p).name for p in allowed.predictions["image_path"]}
    assert {"gray_5.png", "deep_6.png"} <= done and len(done) == originals + 2
    rows = allowed.predictions.set_index(allowed.predictions["image_path"].map(lambda p: Path(p).name))
    overlay = cv2.imread(rows.loc["deep_6.png", "overlay_out"])
    assert overlay[100:200, 100:200].mean() > 60  # percentile scaling, not /257 (which leaves values of 0-2000 below 8)


def test_bad_single_inputs_are_clear(predictor, trained_run: Path, tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no slices found"):
        open_source(tmp_path / "empty")
    (tmp_path / "x.xyz").write_bytes(b"0")
    with pytest.raises(DataError, match=r"x\.xyz: unsupported input format"):
        open_source(tmp_path / "x.xyz")
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="fake.ckpt: not a loadable checkpoint"):
        load_checkpoint(fake)
    import torch

    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a gliomaseg checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    assert main(["predict", "--checkpoint", str(fake), "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "fake.ckpt" in capsys.readouterr().err


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path: Path):
    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "hyper_parameters": {"arch": Evil()}}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "evil.ckpt")


def test_patient_names_cannot_write_outside_out(predictor, synth_root: Path, tmp_path: Path):
    image = next(p for p in _patient(synth_root).glob("*_3.tif"))
    for patient in ("../escaped", str(tmp_path / "absolute"), "..", "a/b", ".hidden"):
        csv = tmp_path / "evil.csv"
        pd.DataFrame({"patient": [patient], "image_path": [str(image)]}).to_csv(csv, index=False)
        with pytest.raises(DataError, match=r"evil\.csv: patient name .* cannot name a file inside the output folder"):
            predict(predictor, csv, tmp_path / "out" / "inner")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.csv"]  # nothing beside or above --out


def test_export_checks_realistic_slices_with_relative_tolerance(trained_run: Path, prepared: Path, tmp_path: Path, capsys):
    """Logits 1e4 times larger (a sharply trained model) fail an absolute 1e-4 bound but agree relatively."""
    import json

    import onnx
    import torch

    from gliomaseg.export.onnx import export_onnx

    checkpoint = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    for key in ("model.segmentation_head.0.weight", "model.segmentation_head.0.bias"):
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key] * 1e4
    torch.save(checkpoint, tmp_path / "sharp.ckpt")
    result = export_onnx(tmp_path / "sharp.ckpt", tmp_path / "sharp.onnx")
    assert result["max_abs_diff"] > 1e-4 and result["max_rel_diff"] <= result["rtol"]
    assert result["mask_agreement"] >= 0.999 and "data_val.csv" in result["inputs"]  # the checkpoint's validation slices
    assert main(["export", "--checkpoint", str(trained_run / "best.ckpt"), "--out", str(tmp_path / "m.onnx"),
                 "--sample", str(prepared / "data_train.csv")]) == 0
    printed = capsys.readouterr().out
    assert "data_train.csv" in printed and "relative" in printed and "masks agree on" in printed
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert {"gliomaseg", "model_card"} <= set(props)
    for value in props.values():  # no path of the training machine in any metadata entry
        assert str(prepared) not in value and str(Path(prepared).resolve()) not in value and str(trained_run) not in value
    assert json.loads(props["gliomaseg"])["val_csv"] == "data_val.csv"


def test_refused_export_leaves_no_file(trained_run: Path, tmp_path: Path, monkeypatch):
    from gliomaseg.core.errors import GliomasegError
    from gliomaseg.export.onnx import export_onnx
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    original = OnnxPredictor.logits
    monkeypatch.setattr(OnnxPredictor, "logits", lambda self, images: original(self, images) + 3.0)
    (tmp_path / "old.onnx").write_bytes(b"previous model")
    for name in ("new.onnx", "old.onnx"):
        with pytest.raises(GliomasegError, match=rf"{name}: not written: .* relative, .* masks agree on"):
            export_onnx(trained_run / "best.ckpt", tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]  # no refused file, no temp file
    assert (tmp_path / "old.onnx").read_bytes() == b"previous model"


GOOD_HPARAMS = {"arch": "Unet", "encoder": "resnet18", "image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "threshold": 0.5}
BAD_HPARAMS = {
    "encoder": ({"encoder": None}, "'encoder' must be a non-empty name, found missing"),
    "size 100": ({"image_size": 100}, "'image_size' must be a multiple of 32 from 32 to 1024"),
    "size 4096": ({"image_size": 4096}, "'image_size' must be a multiple of 32 from 32 to 1024"),
    "size text": ({"image_size": "64"}, "'image_size' must be an integer"),
    "mean of 2": ({"mean": [0.5, 0.5]}, "'mean' must be 3 finite numbers"),
    "std nan": ({"std": [0.2, float("nan"), 0.2]}, "'std' must be 3 finite numbers"),
    "std zero": ({"std": [0.2, 0.0, 0.2]}, "'std' must be 3 positive numbers"),
    "threshold": ({"threshold": 1.5}, "'threshold' must be a probability strictly between 0 and 1"),
    "unknown arch": ({"arch": "Nope"}, "unknown architecture 'Nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD_HPARAMS))
def test_crafted_checkpoints_get_one_clear_error(trained_run: Path, tmp_path: Path, case: str):
    import torch

    change, message = BAD_HPARAMS[case]
    hparams = {k: v for k, v in {**GOOD_HPARAMS, **change}.items() if v is not None}
    state = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    torch.save({"state_dict": state, "hyper_parameters": hparams}, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError, match=rf"crafted\.ckpt: .*{message}"):
        load_checkpoint(tmp_path / "crafted.ckpt")


@pytest.mark.parametrize("meta", ["{}", '{"image_size": 64', '{"arch": "Unet", "encoder": "resnet18", "image_size": 64, '
                                  '"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "threshold": 0}'])
def test_crafted_onnx_metadata_gets_one_clear_error(onnx_model: Path, tmp_path: Path, meta: str):
    import onnx

    from gliomaseg.inference.onnx_backend import OnnxPredictor

    proto = onnx.load(str(onnx_model))
    proto.metadata_props[0].value = meta
    onnx.save(proto, str(tmp_path / "crafted.onnx"))
    with pytest.raises(CheckpointError, match=r"crafted\.onnx: .*(must be|not valid JSON)"):
        OnnxPredictor(tmp_path / "crafted.onnx")


def test_predict_on_slice_threads_writes_what_one_thread_writes(bright_predictor, synth_root: Path, tmp_path: Path, monkeypatch):
    # Under `make test` each xdist worker has one CPU, so the slice pool would otherwise never run in a predict.
    import threading

    from gliomaseg.core import parallel
    from gliomaseg.predict import files

    threads: set[str] = set()
    real = files._write_png

    def write_png(path, array):
        threads.add(threading.current_thread().name)
        return real(path, array)

    monkeypatch.setattr(files, "_write_png", write_png)
    outputs = {}
    for cpus in (1, 2):
        monkeypatch.setattr(parallel, "available_cpus", lambda cpus=cpus: cpus)
        monkeypatch.setattr(parallel, "_executor", None)  # a pool of this size
        threads.clear()
        predict(bright_predictor, _patient(synth_root), tmp_path / str(cpus), gifs=False)
        outputs[cpus] = {p.relative_to(tmp_path / str(cpus)): p.read_bytes() for p in sorted((tmp_path / str(cpus)).rglob("*"))
                         if p.is_file() and p.suffix in (".png", ".csv")}
        assert any(t.startswith("gliomaseg-slices") for t in threads) == (cpus == 2)
    assert len(outputs[1]) > 10 and outputs[1] == outputs[2]
