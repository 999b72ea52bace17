"""What a user sees on the terminal: help for every option, --version, and quiet, informative output."""

from __future__ import annotations

import argparse
import re

import pytest

from gliomaseg import __version__
from gliomaseg.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_and_a_description():
    names = _commands(build_parser())
    assert {"predict", "train", "serve", "convert", "score", "report", "gif"} <= set(names)
    for name in names:
        parser = _commands(build_parser(name))[name]  # train's options exist only when the command is train
        assert parser.description and len(parser.description) > 20, name
        options = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]
        assert options or name == "train", name
        for action in options:
            assert action.help and len(action.help) > 8, (name, action.option_strings)
            assert " of TrainConfig" not in action.help
        text = parser.format_help().split("options:", 1)[1]
        # every default that exists is shown, once
        for action in options:
            if action.default not in (None, False) and not isinstance(action.default, bool):
                flag = action.option_strings[-1]
                block = re.split(rf"\n  (?:-\w[ ,][^\n]*?)?{re.escape(flag)}\b", text, maxsplit=1)[1].split("\n  -", 1)[0]
                assert "default" in block, (name, flag, block)
                assert block.count("default") == 1, (name, flag, block)


def test_train_help_reads_like_written_help():
    text = _commands(build_parser("train"))["train"].format_help()
    assert re.search(r"--lr LR\s+learning rate \(default: 0\.01\)", text)
    assert "(default: fixed)" in text and "fixed (default)" not in text
    assert "--epochs" in text and "(default: 100)" in text


def test_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"gliomaseg {__version__}"


def test_predict_terminal_is_quiet_and_says_where_things_went(synth_root, tmp_path, capfd: pytest.CaptureFixture[str]):
    patient = sorted(synth_root.iterdir())[0]
    few = tmp_path / "few" / patient.name
    few.mkdir(parents=True)
    for path in sorted(patient.glob("*_[12].tif")) + sorted(patient.glob("*_[12]_mask.tif")):
        (few / path.name).write_bytes(path.read_bytes())
    assert main(["predict", "--input", str(few), "--out", str(tmp_path / "out")]) == 0  # the shipped model
    out, err = capfd.readouterr()
    text = out + err
    assert "onnxruntime" not in text and "probe" not in text  # only with --verbose
    assert "warning: this model standardizes each patient" in err
    assert not re.search(r"\.py:\d+", text) and "warnings.warn" not in text  # one plain sentence, no file:line, no code line
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{patient.name}: tumour predicted on ")
    assert "spacing unknown" in lines[0] and "3D Dice" in lines[0]
    assert re.match(r"predicted 2 slice\(s\) of 1 patient\(s\) in [\d.]+ s: report .*report\.html; ", lines[1])
    assert "GIFs" in lines[1] and (tmp_path / "out" / "report.html").is_file()
    assert re.search(r"; model: gliomaseg-default(\.int8)?\.onnx \((fp32|int8), ", lines[1])  # the variant that ran (issue 23)
    assert main(["predict", "--input", str(few), "--out", str(tmp_path / "out2"), "--verbose"]) == 0
    assert "micro-batch" in capfd.readouterr().out


def test_predict_wrong_inputs_get_one_line_and_leave_no_folder(synth_root, tmp_path, capfd: pytest.CaptureFixture[str]):
    mask = next(sorted(synth_root.iterdir())[0].glob("*_mask.tif"))
    assert main(["predict", "--input", str(mask), "--out", str(tmp_path / "m")]) == 2
    err = capfd.readouterr().err
    assert "this is a mask; give the image it belongs to" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    masks_only = tmp_path / "masks" / "p"
    masks_only.mkdir(parents=True)
    (masks_only / mask.name).write_bytes(mask.read_bytes())
    assert main(["predict", "--input", str(masks_only), "--out", str(tmp_path / "m2")]) == 2
    err = capfd.readouterr().err
    assert "mask has no image: this is a mask, give the image it belongs to" in err and not (tmp_path / "m2").exists()
    assert main(["predict", "--input", str(tmp_path / "nothing.tif"), "--out", str(tmp_path / "m3")]) == 2
    out, err = capfd.readouterr()
    assert "input does not exist" in err and "onnxruntime" not in out + err and not (tmp_path / "m3").exists()


def test_lightning_tips_and_third_party_deprecations_are_filtered(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    import warnings

    from gliomaseg.core.terminal import quiet_terminal

    with warnings.catch_warnings():
        quiet_terminal("train")
        from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi.org/project/litlogger/)")
        rank_zero_info("GPU available: False, used: False")
        rank_zero_warn("Checkpoint directory /x exists and is not empty.")
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
        warnings.warn("something a user should know", UserWarning)
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    assert "Tip" not in text and "litlogger" not in text and "not empty" not in text and "deprecated" not in text
    assert "GPU available" in caplog.text  # Lightning's other lines stay
    assert "gliomaseg train: warning: something a user should know" in err and ".py:" not in err
