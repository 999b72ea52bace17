"""The fast path by default: an ONNX model's checked int8 variant beside it runs when it is faster here."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import onnx
import pytest

from gliomaseg.assets import shipped_model_path
from gliomaseg.core.errors import CheckpointError
from gliomaseg.inference import variants
from gliomaseg.inference.backend import open_predictor
from gliomaseg.inference.variants import check_problem, open_fastest, variant_path


@pytest.fixture(scope="module")
def pair(onnx_model: Path, prepared: Path, tmp_path_factory) -> Path:
    """An fp32 export and its checked int8 variant beside it, named by the rule."""
    from gliomaseg.export.onnx import quantize_model

    folder = tmp_path_factory.mktemp("pair")
    fp32 = folder / "model.onnx"
    shutil.copy(onnx_model, fp32)
    quantize_model(fp32, variant_path(fp32), "int8", check_csv=prepared / "data_val.csv",
                   calibration_csv=prepared / "data_train.csv", calibration_slices=8)
    return fp32


def _rewrite_variant(path: Path, **changes) -> None:
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "gliomaseg":
            meta = json.loads(prop.value)
            meta["variant"].update(changes)
            prop.value = json.dumps(meta)
    onnx.save(proto, str(path))


def test_naming_rule():
    assert variant_path(Path("a/model.onnx")) == Path("a/model.int8.onnx")


def test_auto_runs_the_faster_checked_variant(pair: Path, monkeypatch, tmp_path: Path):
    assert check_problem(pair, variant_path(pair)) is None
    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path / "cache"))
    for faster in ("int8", "fp32"):
        monkeypatch.setattr(variants, "_rate", lambda p, images, f=faster: 100.0 if p.path.name.count(".int8") == (f == "int8") else 10.0)
        predictor = open_fastest(pair, use_cache=False)
        assert predictor.choice.variant == faster and predictor.path == (variant_path(pair) if faster == "int8" else pair)
        assert predictor.choice.rates == {"fp32": 100.0 if faster == "fp32" else 10.0, "int8": 100.0 if faster == "int8" else 10.0}
        assert "faster than" in predictor.choice.message()
        assert "slices/s" in predictor.choice.message(verbose=True) and "slices/s" not in predictor.choice.message()
    assert not (tmp_path / "cache" / f"{variants.CACHE_KIND}.json").exists()  # use_cache=False stores nothing


def test_the_two_are_timed_alternately_and_the_choice_is_cached(pair: Path, monkeypatch, tmp_path: Path):
    """A slow spell of the machine must not decide the choice: the rounds alternate and each keeps its best;
    a second run takes the cached choice and opens only the winner's session."""
    from gliomaseg.inference import onnx_backend

    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path / "cache"))
    timed: list[str] = []
    # int8 is truly faster (80 against 50) but its first round falls in a slow spell (20): it must still win.
    spells = {"int8": itertools.chain([20.0], itertools.repeat(80.0)), "fp32": itertools.repeat(50.0)}

    def rate(predictor, images):
        name = "int8" if ".int8" in predictor.path.name else "fp32"
        timed.append(name)
        assert images.shape == (variants.COMPARE_SLICES, predictor.image_size, predictor.image_size, 3)
        return next(spells[name])

    monkeypatch.setattr(variants, "_rate", rate)
    first = open_fastest(pair)
    assert timed == ["fp32", "int8"] * variants.COMPARE_ROUNDS
    assert first.choice.variant == "int8" and first.choice.rates == {"fp32": 50.0, "int8": 80.0}
    assert first.choice.reason == "faster than fp32 here, measured"

    opened: list[str] = []
    real_init = onnx_backend.OnnxPredictor.__init__
    monkeypatch.setattr(onnx_backend.OnnxPredictor, "__init__",
                        lambda self, path, **kw: (opened.append(Path(path).name), real_init(self, path, **kw))[1])
    again = open_fastest(pair)
    assert opened == [variant_path(pair).name] and len(timed) == 2 * variants.COMPARE_ROUNDS  # nothing timed again
    assert again.choice.variant == "int8" and again.choice.rates == {"fp32": 50.0, "int8": 80.0}
    assert again.choice.reason == "faster than fp32 here, measured earlier on this machine"
    opened.clear()
    assert open_fastest(pair, threads=1).choice.reason.endswith("here, measured")  # other options: measured anew
    assert sorted(opened) == sorted([pair.name, variant_path(pair).name])


def test_forced_variants(pair: Path):
    assert open_fastest(pair, "fp32").path == pair
    int8 = open_fastest(pair, "int8")
    assert int8.path == variant_path(pair) and int8.choice.check["check_patients"] >= 1
    with pytest.raises(CheckpointError, match="unknown variant"):
        open_fastest(pair, "fp16")


def test_a_variant_that_failed_or_is_another_model_is_never_used(pair: Path, tmp_path: Path):
    fp32 = tmp_path / "m.onnx"
    shutil.copy(pair, fp32)
    sibling = variant_path(fp32)
    shutil.copy(variant_path(pair), sibling)
    assert check_problem(fp32, sibling) is None
    _rewrite_variant(sibling, patient_dice_drop=0.5)
    assert "failed its check" in check_problem(fp32, sibling)
    predictor = open_fastest(fp32)
    assert predictor.path == fp32 and "failed its check" in predictor.choice.reason
    with pytest.raises(CheckpointError, match="no usable int8 variant"):
        open_fastest(fp32, "int8")
    _rewrite_variant(sibling, patient_dice_drop=0.0, fp32_digest="0" * 20)
    assert "another file" in check_problem(fp32, sibling)
    sibling.unlink()
    lone = open_fastest(fp32)
    assert lone.path == fp32 and lone.choice.variant == "fp32"


def test_a_damaged_int8_sibling_falls_back_to_fp32_and_says_why(pair: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path / "cache"))
    fp32 = tmp_path / "m.onnx"
    shutil.copy(pair, fp32)
    proto = onnx.load(str(variant_path(pair)))
    damaged = next(t for t in proto.graph.initializer if len(t.raw_data) > 8)
    damaged.raw_data = damaged.raw_data[: len(damaged.raw_data) // 2]  # the weights broken, the metadata intact
    onnx.save(proto, str(variant_path(fp32)))
    assert check_problem(fp32, variant_path(fp32)) is None  # its check and digest still pass: only loading shows it
    predictor = open_fastest(fp32)
    assert predictor.path == fp32 and predictor.choice.variant == "fp32"
    assert predictor.choice.reason.startswith("m.int8.onnx does not load: not a loadable ONNX model")
    with pytest.raises(CheckpointError, match="m.int8.onnx: not a loadable"):
        open_fastest(fp32, "int8")  # asked for by name: its error is the answer


def test_the_shipped_model_has_a_checked_int8_variant():
    shipped = shipped_model_path()
    int8 = variant_path(shipped)
    assert int8.is_file() and check_problem(shipped, int8) is None
    assert int8.stat().st_size < shipped.stat().st_size / 3
    check = variants._metadata(int8)["variant"]
    assert check["check_patients"] == 13 and check["patient_dice_drop"] <= check["max_dice_drop_allowed"]
    predictor = open_predictor()
    assert predictor.choice.variant in ("fp32", "int8") and set(predictor.choice.rates) == {"fp32", "int8"}


def test_evaluate_takes_an_onnx_model_and_its_variant(pair: Path, prepared: Path, tmp_path: Path, capsys):
    from gliomaseg.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(pair), "--variant", "int8", "--csv", str(prepared / "data_val.csv"),
                 "--out", str(out), "--no-compare"]) == 0
    assert "model: model.int8.onnx (int8, as asked)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert Path(summary["checkpoint"]).name == "model.int8.onnx" and 0.0 <= summary["patient_dice_mean"] <= 1.0
