"""What a trained model is, as stored with it: architecture, encoder, size, normalization, threshold (:class:`ModelInfo`).

This module is the one reader of a model's description, wherever it is stored:

- a training checkpoint: :func:`read_checkpoint` reads it with ``torch.load(weights_only=True)`` (no pickled code
  runs) and its ``hyper_parameters`` become a :class:`ModelInfo` (the training side writes them with
  Lightning's ``save_hyperparameters``);
- an exported ONNX model: the JSON under :data:`METADATA_KEY` in its metadata, read with :func:`read_onnx_metadata`
  (the onnx package) or :func:`onnx_model_info` (ONNX Runtime's metadata map) and written with
  :func:`write_onnx_metadata` / :func:`set_onnx_metadata`.

:func:`normalize` is where uint8 pixels become the model's input at inference (both backends, the int8
calibration); training's albumentations ``Normalize`` (:mod:`gliomaseg.data.transforms`) applies the same stored
mean and std, ``(x / 255 - mean) / std``, the same numbers in another order, as smp's recipe does.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from gliomaseg.core.defaults import DEFAULT_THRESHOLD
from gliomaseg.core.errors import CheckpointError, first_line
from gliomaseg.data.intensity import DEFAULT_INTENSITY, INTENSITY_MODES

IMAGE_SIZE_RANGE = (32, 1024)  # the sizes a model description may claim (multiples of 32)
METADATA_KEY = "gliomaseg"  # the ONNX metadata entry holding a model's description (JSON)
CARD_KEY = "model_card"  # the model card's fields (JSON): an ONNX metadata entry, and an entry of a run's checkpoint


def pixel_normalization(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``mean * 255`` and ``std * 255`` as float32 (1, 3, 1, 1): the normalization in 0-255 pixel units."""
    return (np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0,
            np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32 model input, ``(pixel - mean * 255) / (std * 255)``, contiguous."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected (N, S, S, 3) uint8 images, found {images.dtype} {images.shape}")
    scaled_mean, scaled_std = pixel_normalization(mean, std)
    # Each uint8 value's result looked up per channel (the same float32 arithmetic, once per value), written plane by
    # plane into the NCHW array: about 7x faster than a float copy of the transposed batch.
    tables = (np.arange(256, dtype=np.float32)[None, :] - scaled_mean.reshape(3, 1)) / scaled_std.reshape(3, 1)
    out = np.empty((images.shape[0], 3, *images.shape[1:3]), np.float32)
    for index, image in enumerate(images):
        for channel, plane in enumerate(cv2.split(np.ascontiguousarray(image))):
            out[index, channel] = cv2.LUT(plane, tables[channel])
    return out


@dataclass
class ModelInfo:
    """What a checkpoint or an exported ONNX model says about itself."""

    arch: str
    encoder: str
    image_size: int
    mean: list[float]
    std: list[float]
    threshold: float
    in_channels: int = 3
    classes: int = 1
    train_csv: str | None = None
    val_csv: str | None = None
    intensity: str = DEFAULT_INTENSITY  # models from before the option was added saw slices as read
    decoder_channels: list[int] | None = None  # None: smp's default decoder (256, 128, 64, 32, 16)

    @classmethod
    def from_dict(cls, values: object, source: str | Path) -> "ModelInfo":
        """Validate a model description (checkpoint hyperparameters or ONNX metadata), field by field.

        Raises one :class:`CheckpointError` naming ``source`` and the field for anything missing or out of
        range: architecture and encoder names, image size (32..1024, a multiple of 32), mean and std
        (3 finite floats, std > 0), threshold in (0, 1), 3 input channels, 1 class and a known intensity mode.
        """
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: model description is not a mapping of fields")

        def bad(field: str, expected: str) -> CheckpointError:
            shown = repr(values[field])[:80] if field in values else "missing"
            return CheckpointError(f"{source}: model description field {field!r} must be {expected}, found {shown}")

        def number(field: str, kind: type, default=None):
            value = values.get(field, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise bad(field, "an integer" if kind is int else "a number")
            return kind(value)

        for field in ("arch", "encoder"):
            if not isinstance(values.get(field), str) or not values[field].strip():
                raise bad(field, "a non-empty name")
        low, high = IMAGE_SIZE_RANGE
        size = number("image_size", int)
        if not low <= size <= high or size % 32:
            raise bad("image_size", f"a multiple of 32 from {low} to {high}")
        stats = {}
        for field in ("mean", "std"):
            value = values.get(field)
            if (not isinstance(value, (list, tuple)) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                raise bad(field, "3 finite numbers (one per RGB channel)")
            stats[field] = [float(v) for v in value]
        if min(stats["std"]) <= 0:
            raise bad("std", "3 positive numbers")
        threshold = number("threshold", float, DEFAULT_THRESHOLD)
        if not 0.0 < threshold < 1.0:
            raise bad("threshold", "a probability strictly between 0 and 1")
        if number("in_channels", int, 3) != 3:
            raise bad("in_channels", "3 (RGB slices)")
        if number("classes", int, 1) != 1:
            raise bad("classes", "1 (binary tumour mask)")
        for field in ("train_csv", "val_csv"):
            if values.get(field) is not None and not isinstance(values[field], str):
                raise bad(field, "a path or nothing")
        intensity = values.get("intensity", DEFAULT_INTENSITY)
        if intensity not in INTENSITY_MODES:
            raise bad("intensity", f"one of {', '.join(INTENSITY_MODES)}")
        widths = values.get("decoder_channels")
        if widths is not None and (not isinstance(widths, (list, tuple)) or not 3 <= len(widths) <= 5 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in widths)):
            raise bad("decoder_channels", "3 to 5 positive whole numbers, or nothing")
        return cls(arch=values["arch"], encoder=values["encoder"], image_size=size, mean=stats["mean"], std=stats["std"],
                   threshold=threshold, train_csv=values.get("train_csv"), val_csv=values.get("val_csv"), intensity=intensity,
                   decoder_channels=None if widths is None else [int(v) for v in widths])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> the model's (N, 3, S, S) float32 input (:func:`normalize` with this model's mean and std)."""
        return normalize(images, self.mean, self.std)

    def portable(self) -> dict:
        """The description without the training machine's paths (CSV file names only), for exported models."""
        values = asdict(self)
        for field in ("train_csv", "val_csv"):
            values[field] = None if values[field] is None else Path(values[field]).name
        return values


def load_checkpoint_file(path: str | Path) -> tuple[dict, ModelInfo]:
    """The whole checkpoint (plain data, loaded without executing pickled code) and the description of its model,
    read from its ``hyper_parameters``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({first_line(exc)})") from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict) or not isinstance(
            checkpoint.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path}: not a gliomaseg checkpoint (no state_dict with model hyperparameters)")
    return checkpoint, ModelInfo.from_dict(checkpoint["hyper_parameters"], path)


def read_checkpoint(path: str | Path) -> tuple[dict, ModelInfo]:
    """The model state dict and its description, loaded without executing pickled code."""
    path = Path(path)
    checkpoint, info = load_checkpoint_file(path)
    return model_state(checkpoint, path), info


def model_state(checkpoint: dict, path: str | Path) -> dict:
    """The model's weights in a loaded checkpoint (its ``model.*`` entries), refused when any is NaN or infinite."""
    import torch

    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if isinstance(k, str) and k.startswith("model.")}
    if not state:
        raise CheckpointError(f"{path}: checkpoint holds no model weights (no 'model.*' entries in its state_dict)")
    broken = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise CheckpointError(f"{path}: weight {broken[0]}{more} holds NaN or infinite values; a model with broken weights "
                              "predicts meaningless masks")
    return state


def onnx_metadata(props: Mapping[str, str]) -> Any:
    """The model description stored under :data:`METADATA_KEY` in an ONNX model's metadata ``props`` (key -> value),
    parsed from JSON; ``None`` when there is none. Invalid JSON raises :class:`json.JSONDecodeError`."""
    return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else None


def read_onnx_metadata(path: str | Path) -> Any:
    """:func:`onnx_metadata` of the ONNX file ``path``, read with the onnx package (external weights not loaded)."""
    import onnx

    return onnx_metadata({p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props})


def onnx_model_info(props: Mapping[str, str], source: str | Path) -> tuple[dict, ModelInfo]:
    """The raw description and the :class:`ModelInfo` in an ONNX model's metadata ``props`` (e.g. ONNX Runtime's
    ``custom_metadata_map``); one :class:`CheckpointError` naming ``source`` when it is missing, not JSON or invalid."""
    try:
        meta = onnx_metadata(props)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source}: gliomaseg metadata is not valid JSON ({exc})") from exc
    if meta is None:
        raise CheckpointError(f"{source}: ONNX model has no gliomaseg metadata (export it with `gliomaseg export`)")
    return meta, ModelInfo.from_dict(meta, source)


def onnx_card(props: Mapping[str, str]) -> dict | None:
    """The model card fields in an ONNX model's metadata ``props``; None when it has none (or not as JSON)."""
    try:
        card = json.loads(props[CARD_KEY]) if CARD_KEY in props else None
    except (TypeError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def set_onnx_metadata(proto, value: Any, key: str = METADATA_KEY) -> None:
    """Store ``value`` as JSON under ``key`` in a loaded ONNX ``ModelProto``'s metadata, after its other entries
    (an earlier entry of ``key`` is replaced)."""
    kept = [p for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, json.dumps(value)


def write_onnx_metadata(path: str | Path, meta: Any) -> None:
    """Replace the model description (:data:`METADATA_KEY`) of the ONNX file ``path`` with ``meta``."""
    import onnx

    proto = onnx.load(str(path))
    set_onnx_metadata(proto, meta)
    onnx.save(proto, str(path))
