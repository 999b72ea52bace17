"""export --quantize int8 / fp16: checked against fp32 with real agreement numbers, refused without leaving a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from gliomaseg.cli import main
from gliomaseg.core.errors import GliomasegError
from gliomaseg.core.machine import available_cpus
from gliomaseg.export import quantization
from gliomaseg.export.quantization import QuantizationError, load_slices, write_variant
from gliomaseg.inference.onnx_backend import OnnxPredictor


@pytest.fixture(scope="module")
def int8_export(trained_run: Path, tmp_path_factory) -> tuple[Path, dict]:
    from gliomaseg.export.onnx import export_variant

    out = tmp_path_factory.mktemp("int8") / "model-int8.onnx"
    result = export_variant(trained_run / "best.ckpt", out, "int8", calibration_slices=12)
    return out, result


def _metadata(path: Path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["gliomaseg"])


def test_int8_export_is_quantized_calibrated_on_training_slices_and_checked(int8_export, onnx_model: Path, prepared: Path):
    out, result = int8_export
    report = result["variant"]
    # no temp files left; the model card goes beside every export
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, f"{out.stem}.MODEL_CARD.md"])
    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) > 20  # the convolutions' weights are int8
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)]
    assert per_channel  # weights quantized per output channel
    assert report["calibration_csv"] == "data_train.csv" and report["calibration_slices"] == 12
    assert report["check_csv"] == "data_val.csv" and report["file_bytes"] < 0.35 * report["fp32_file_bytes"]
    assert _metadata(out)["variant"] == report
    # The stored numbers are the real ones: recompute them from both models on the validation slices.
    check = load_slices(prepared / "data_val.csv", 64, with_truth=True)
    ref = OnnxPredictor(onnx_model, micro_batch=4).probabilities(check.images) > 0.5
    got = OnnxPredictor(out, micro_batch=4).probabilities(check.images) > 0.5
    agreement = float((ref == got).mean())
    assert report["mask_agreement"] == pytest.approx(agreement, abs=1e-6)
    assert agreement > 0.9  # a 2-epoch model at 64 px: many probabilities sit near the threshold
    assert report["check_slices"] == len(check.images) and report["check_patients"] == len(set(check.patients))
    assert abs(report["patient_dice_drop"]) <= quantization.MAX_DICE_DROP
    assert report["patient_dice_drop"] == pytest.approx(report["patient_dice_fp32_mean"] - report["patient_dice_mean"], abs=2e-5)
    assert report["patient_dice_drop_max"] >= report["patient_dice_drop"]


def test_fp16_weights_halve_the_file_and_keep_the_masks(onnx_model: Path, prepared: Path, tmp_path: Path):
    out = tmp_path / "model-fp16.onnx"
    report = write_variant(onnx_model, out, "fp16", check_csv=prepared / "data_val.csv")
    assert report["tensors_converted"] > 20
    assert 0.45 < report["file_bytes"] / report["fp32_file_bytes"] < 0.55
    # A 2-epoch model leaves many logits near the threshold, where fp16 weights flip a few pixels.
    assert report["mask_agreement"] > 0.995 and abs(report["patient_dice_drop_max"]) < 5e-3 and abs(report["patient_dice_drop"]) < 5e-3
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(out)).graph.initializer)
    images = load_slices(prepared / "data_val.csv", 64).images[:4]
    ref = OnnxPredictor(onnx_model, micro_batch=4).logits(images)
    assert np.abs(OnnxPredictor(out, micro_batch=4).logits(images) - ref).max() < 0.05 * np.abs(ref).max()


def test_variant_that_loses_dice_is_refused_and_leaves_no_file(onnx_model: Path, prepared: Path, tmp_path: Path, monkeypatch):
    real = quantization.compare_with_fp32

    def mean_drop(reference, candidate, check):
        return {**real(reference, candidate, check), "patient_dice_drop": 0.008}

    def one_patient(reference, candidate, check):
        return {**real(reference, candidate, check), "patient_dice_drop": 0.001, "patient_dice_drop_max": 0.08, "worst_patient": "P1"}

    out = tmp_path / "out" / "model.onnx"
    monkeypatch.setattr(quantization, "compare_with_fp32", mean_drop)
    with pytest.raises(QuantizationError, match=r"not written: with fp16 the mean per-patient Dice drops by 0.0080 \(limit 0.005\)"):
        write_variant(onnx_model, out, "fp16", check_csv=prepared / "data_val.csv")
    monkeypatch.setattr(quantization, "compare_with_fp32", one_patient)
    with pytest.raises(QuantizationError, match=r"patient P1 loses 0.0800 Dice \(limit 0.05 for one patient\)"):
        write_variant(onnx_model, out, "fp16", check_csv=prepared / "data_val.csv")
    assert list(out.parent.iterdir()) == []  # neither the model nor a temp file


def test_calibration_never_uses_validation_slices(onnx_model: Path, prepared: Path, tmp_path: Path):
    with pytest.raises(QuantizationError, match="is the validation CSV"):
        write_variant(onnx_model, tmp_path / "m.onnx", "int8", check_csv=prepared / "data_val.csv",
                      calibration_csv=prepared / "data_val.csv", calibration_slices=4)
    mixed = tmp_path / "mixed.csv"
    import pandas as pd

    pd.concat([pd.read_csv(prepared / "data_train.csv").head(3), pd.read_csv(prepared / "data_val.csv").head(2)]).to_csv(mixed, index=False)
    with pytest.raises(QuantizationError, match="2 calibration slice"):
        write_variant(onnx_model, tmp_path / "m.onnx", "int8", check_csv=prepared / "data_val.csv", calibration_csv=mixed,
                      calibration_slices=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.csv"]


def test_cli_export_fp16_prints_the_check(trained_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "m16.onnx"
    assert main(["export", "--checkpoint", str(trained_run / "best.ckpt"), "--out", str(out), "--quantize", "fp16"]) == 0
    text = capsys.readouterr().out
    assert "fp16 vs fp32 on" in text and "mask pixel agreement" in text and "one patient's largest drop" in text and out.is_file()
    assert main(["export", "--checkpoint", str(trained_run / "best.ckpt"), "--out", str(tmp_path / "x.onnx"), "--quantize", "fp16",
                 "--max-dice-drop", "-1"]) == 2  # an impossible bound: refused, one error line, no file
    assert "not written" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m16.MODEL_CARD.md", "m16.onnx"]  # the card comes with a written model only


def test_cli_quantizes_an_onnx_model_without_its_checkpoint(onnx_model: Path, prepared: Path, tmp_path: Path, capsys):
    out = tmp_path / "int8.onnx"
    base = ["export", "--model", str(onnx_model), "--out", str(out), "--quantize", "int8"]
    assert main(base + ["--check-csv", str(prepared / "data_val.csv")]) == 2  # int8 without training slices
    assert "--calibration-csv" in capsys.readouterr().err and not out.exists()
    assert main(["export", "--model", str(onnx_model), "--checkpoint", "x.ckpt", "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(base + ["--check-csv", str(prepared / "data_val.csv"), "--calibration-csv", str(prepared / "data_train.csv"),
                        "--calibration-slices", "8"]) == 0
    assert "int8 vs fp32 on" in capsys.readouterr().out
    variant = _metadata(out)["variant"]
    assert variant["weights"] == "int8" and variant["calibration_slices"] == 8


def test_runtime_settings_are_measured_cached_and_overridable(int8_export, monkeypatch, tmp_path):
    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path))
    model, _ = int8_export
    first = OnnxPredictor(model)
    assert first.settings.source == "measured now" and first.micro_batch in (1, 2, 4, 8)
    assert len(first.settings.slices_per_second) >= 4 and "micro-batch" in first.settings.message()
    again = OnnxPredictor(model)
    assert again.settings.source.startswith("cached") and again.micro_batch == first.micro_batch
    given = available_cpus() + 1  # never the default, which is at most the CPUs this process may use
    forced = OnnxPredictor(model, threads=given, micro_batch=3)
    assert first.settings.threads != given
    assert (forced.settings.threads, forced.micro_batch, forced.settings.source) == (given, 3, "given")
    assert forced.session.get_session_options().intra_op_num_threads == given
    with pytest.raises(GliomasegError, match="at least 1"):
        OnnxPredictor(model, threads=0)


def test_cli_predict_onnx_says_its_settings(int8_export, synth_root: Path, tmp_path: Path, capsys):
    model, _ = int8_export
    patient = sorted(synth_root.iterdir())[0]
    assert main(["predict", "--model", str(model), "--input", str(patient), "--out", str(tmp_path / "p"),
                 "--threads", str(available_cpus() + 1), "--verbose"]) == 0  # settings said with --verbose only (issue 24)
    text = capsys.readouterr().out
    assert f"onnxruntime: {available_cpus() + 1} thread(s), micro-batch" in text and (tmp_path / "p" / "predictions.csv").is_file()


def test_calibration_ranges_cover_every_batch(onnx_model: Path, tmp_path: Path):
    from onnx import numpy_helper

    from gliomaseg.export.quantization import CALIBRATION_BATCH, quantize_int8

    # The first batch spans 0..255, the two after it are flat grey: the input's range must come from all three.
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (CALIBRATION_BATCH, 64, 64, 3), dtype=np.uint8)
    wide[0, 0, 0], wide[0, 0, 1] = 0, 255
    flat = np.full((2 * CALIBRATION_BATCH, 64, 64, 3), 128, np.uint8)
    out = tmp_path / "q.onnx"
    quantize_int8(onnx_model, out, np.concatenate([wide, flat]))
    graph = onnx.load(str(out)).graph
    first = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "images")
    scale = float(numpy_helper.to_array(next(i for i in graph.initializer if i.name == first.input[1])))
    meta = _metadata(onnx_model)
    lo = min((0 - 255 * m) / (255 * s) for m, s in zip(meta["mean"], meta["std"]))
    hi = max((255 - 255 * m) / (255 * s) for m, s in zip(meta["mean"], meta["std"]))
    assert scale == pytest.approx((hi - lo) / 255, rel=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def test_quantization_leaves_nothing_in_the_current_folder(onnx_model: Path, tmp_path: Path, monkeypatch):
    # ONNX Runtime's pre-processing writes a temporary model and a weights file into the current folder when its
    # symbolic shape inference fails; here it is made to write one, and the user's folder must stay empty.
    import onnxruntime.quantization.shape_inference as shape_inference

    from gliomaseg.export.quantization import quantize_int8

    real, calls = shape_inference.quant_pre_process, []

    def leaky(src, dst, *args, **kwargs):
        calls.append(src)
        Path("sym_shape_infer_temp.onnx").write_bytes(b"left behind")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", leaky)
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.chdir(user)
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    quantize_int8(onnx_model, Path("..") / "q.onnx", images)  # a relative output, as a user types it
    assert len(calls) == 1  # the leak really ran
    assert list(user.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "user"]
