"""Ship a trained run as gliomaseg's default model: ONNX + MODEL_CARD.md in src/gliomaseg/assets/.

    .venv/bin/python scripts/ship_model.py RUN --reproduce docs/results/recipe_reproduce.md

Needs ``RUN/best.ckpt`` and ``RUN/eval/summary.json`` (``gliomaseg evaluate`` of best.ckpt on its
validation CSV). Exports through ``gliomaseg.export.onnx.export_onnx`` (checked against PyTorch), replaces
the training machine's folders in the metadata and card by the names users have (``data/...``),
checks the size limit, and writes the card with a "How to reproduce" section.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnx

from gliomaseg.assets import SHIPPED_MODEL, SHIPPED_MODEL_CARD
from gliomaseg.export.onnx import export_onnx
from gliomaseg.core.io import atomic_write, write_text
from gliomaseg.modeling.card import render_markdown

ASSETS = Path(__file__).resolve().parents[1] / "src" / "gliomaseg" / "assets"
MAX_BYTES = 30 * 1024 * 1024


def _relative(value: str, data_dir: str) -> str:
    return value.replace(data_dir.rstrip("/") + "/", "data/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--reproduce", type=Path, required=True, help="Markdown appended to the card: how to reproduce")
    args = parser.parse_args(argv)
    config = json.loads((args.run / "config.json").read_text())
    # A run trained from --data, or from --train-csv/--val-csv (as an experiment's runs are): its data folder.
    data_dir = str(Path(config["data"]).resolve() if config.get("data") else Path(config["train_csv"]).resolve().parent)
    target = ASSETS / SHIPPED_MODEL
    with tempfile.TemporaryDirectory() as tmp:
        result = export_onnx(args.run / "best.ckpt", Path(tmp) / SHIPPED_MODEL, write_card=False)
        proto = onnx.load(result["path"])
        for prop in proto.metadata_props:
            prop.value = _relative(prop.value, data_dir)
        size = proto.ByteSize()
        if size > MAX_BYTES:  # refused before anything in assets/ is touched: the shipped model stays as it was
            print(f"{args.run / 'best.ckpt'}: {size / 2**20:.1f} MiB as ONNX is over the {MAX_BYTES / 2**20:.0f} MiB limit; "
                  "not shipped", file=sys.stderr)
            return 1
        card = json.loads(_relative(json.dumps(result["card"]), data_dir))
        text = render_markdown(card) + "\n" + args.reproduce.read_text()
        atomic_write(target, lambda tmp_file: onnx.save(proto, str(tmp_file)))  # each file whole or not at all
        write_text(text, ASSETS / SHIPPED_MODEL_CARD)
    print(f"shipped {target} ({size / 2**20:.1f} MiB, ONNX vs PyTorch max abs logit difference {result['max_abs_diff']:.1e}) "
          f"and {ASSETS / SHIPPED_MODEL_CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
