"""Files that ship inside the package: the default model and its model card.

Read through :mod:`importlib.resources`, so an installed wheel finds them as well as a source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from gliomaseg.core.errors import CheckpointError

SHIPPED_MODEL = "gliomaseg-default.onnx"
SHIPPED_MODEL_CARD = "MODEL_CARD.md"


def shipped_card_text() -> str:
    """The shipped model's card (Markdown); empty when this installation carries none."""
    path = Path(str(resources.files(__package__) / SHIPPED_MODEL_CARD))
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def shipped_model_path() -> Path:
    """The ONNX model that ships with gliomaseg (used when no --model / --checkpoint is given)."""
    path = Path(str(resources.files(__package__) / SHIPPED_MODEL))
    if not path.is_file():
        raise CheckpointError(
            f"{path}: this installation of gliomaseg carries no default model; pass --model MODEL.onnx or --checkpoint RUN/best.ckpt"
        )
    return path
