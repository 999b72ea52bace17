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
