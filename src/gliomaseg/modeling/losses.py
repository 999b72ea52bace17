"""The 8 smp losses by name, in binary mode, and weighted sums of them (``0.5*dice+0.5*focal``).

Every loss takes logits (N, 1, H, W) and a 0/1 mask (N, 1, H, W).
"""

from __future__ import annotations

import re

import segmentation_models_pytorch as smp
import torch
from torch import nn

from gliomaseg.core.errors import ConfigError


class BinaryCrossEntropy(nn.Module):
    """smp's SoftCrossEntropyLoss on one logit: class 1 gets the logit, class 0 gets 0, so softmax = sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = smp.losses.SoftCrossEntropyLoss(smooth_factor=0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return self.loss(two_class, target[:, 0].long())


class BinaryMCC(nn.Module):
    """smp's MCCLoss expects probabilities; this one takes logits."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = smp.losses.MCCLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.sigmoid(), target)


LOSSES = {
    "dice": lambda: smp.losses.DiceLoss(mode="binary", from_logits=True),
    "jaccard": lambda: smp.losses.JaccardLoss(mode="binary", from_logits=True),
    "tversky": lambda: smp.losses.TverskyLoss(mode="binary", from_logits=True),
    "focal": lambda: smp.losses.FocalLoss(mode="binary"),
    "lovasz": lambda: smp.losses.LovaszLoss(mode="binary"),
    "bce": lambda: smp.losses.SoftBCEWithLogitsLoss(),
    "ce": BinaryCrossEntropy,
    "mcc": BinaryMCC,
}

_TERM = re.compile(r"^\s*(?:(?P<weight>\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?(?P<name>[a-z]+)\s*$")


class WeightedSum(nn.Module):
    """sum_i weight_i * loss_i(logits, target)."""

    def __init__(self, terms: list[tuple[float, str]]) -> None:
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.names = [n for _, n in terms]
        self.losses = nn.ModuleList(LOSSES[n]() for n in self.names)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses))


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """``"0.5*dice+bce"`` -> ``[(0.5, "dice"), (1.0, "bce")]``."""
    terms = []
    for part in spec.lower().split("+"):
        match = _TERM.match(part)
        if not match or match["name"] not in LOSSES:
            raise ConfigError(f"unknown loss term {part.strip()!r} in {spec!r}; valid names: {', '.join(LOSSES)}, "
                              "combined as e.g. dice+bce or 0.5*dice+0.5*focal")
        terms.append((float(match["weight"] or 1.0), match["name"]))
    return terms


def build_loss(spec: str) -> nn.Module:
    """A loss module by name or weighted sum of names."""
    terms = parse_loss(spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return LOSSES[terms[0][1]]()
    return WeightedSum(terms)
