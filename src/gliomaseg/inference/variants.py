"""The fastest checked variant of an ONNX model on this machine: fp32 or its int8 beside it.

Naming rule: the int8 variant of ``NAME.onnx`` is ``NAME.int8.onnx`` in the same folder (what
``gliomaseg export --quantize int8 --out NAME.int8.onnx`` writes, and how the shipped pair is named). A variant
counts only when its ``gliomaseg`` metadata carries the check against fp32 that ``export`` stores (see
:mod:`gliomaseg.export.quantization`), that check passed its own limits, its model is the same one (architecture,
encoder, size, intensity, threshold) and, when recorded, its fp32 digest is that of the file beside it.

Which one runs is measured, not assumed: int8 is 2-3x faster on CPUs with VNNI, but not on every CPU. Each
candidate's ONNX Runtime probe (:mod:`gliomaseg.inference.onnx_backend`, a second or two, cached per machine) gives
its slices/s; the fastest wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from gliomaseg.core.defaults import VARIANT_CHOICES
from gliomaseg.core.errors import CheckpointError
from gliomaseg.modeling.spec import read_onnx_metadata

# The fields a variant must share with its fp32 model to count as the same model.
SAME_MODEL_FIELDS = ("arch", "encoder", "decoder_channels", "image_size", "intensity", "threshold", "mean", "std")


def variant_path(model: str | Path, variant: str = "int8") -> Path:
    """Where the ``variant`` of ``model`` (``NAME.onnx``) lives: ``NAME.<variant>.onnx`` beside it."""
    model = Path(model)
    return model.with_name(f"{model.stem}.{variant}{model.suffix}")


def _metadata(path: Path) -> dict:
    """``path``'s description (:func:`gliomaseg.modeling.spec.read_onnx_metadata`; ``{}`` when it has none); any
    failure to read it is one :class:`CheckpointError`."""
    try:
        meta = read_onnx_metadata(path)
        return {} if meta is None else meta
    except Exception as exc:  # a damaged sibling is not a reason to fail the model the user asked for
        raise CheckpointError(f"{path}: unreadable ONNX metadata ({type(exc).__name__})") from exc


def check_problem(model: Path, candidate: Path) -> str | None:
    """Why ``candidate`` may not stand in for ``model`` (``None``: it may)."""
    from gliomaseg.inference.onnx_backend import file_digest

    try:
        base, meta = _metadata(model), _metadata(candidate)
    except CheckpointError as exc:
        return str(exc)
    report = meta.get("variant")
    if not isinstance(report, dict) or "patient_dice_drop" not in report:
        return f"{candidate.name} carries no check against fp32"
    numbers = [report.get(k) for k in ("patient_dice_drop", "max_dice_drop_allowed", "patient_dice_drop_max",
                                       "max_single_patient_dice_drop_allowed")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return f"{candidate.name} failed its check against fp32 (its numbers are missing or not finite)"
    drop, allowed, worst, worst_allowed = numbers
    if drop > allowed or worst > worst_allowed:
        return f"{candidate.name} failed its check against fp32"
    differing = [k for k in SAME_MODEL_FIELDS if base.get(k) != meta.get(k)]
    if differing:
        return f"{candidate.name} is another model than {model.name} ({', '.join(differing)} differ)"
    digest = report.get("fp32_digest")
    if digest is not None and digest != file_digest(model):
        return f"{candidate.name} was made from another file than {model.name}"
    return None


@dataclass
class Choice:
    """Which file runs and why: ``rates`` is the best probe slices/s of each candidate, by variant name."""

    path: Path
    variant: str
    reason: str
    rates: dict[str, float] = field(default_factory=dict)
    check: dict = field(default_factory=dict)

    def message(self, verbose: bool = False) -> str:
        line = f"model: {self.path.name} ({self.variant}, {self.reason})"
        if verbose and self.rates:
            line += "; slices/s " + ", ".join(f"{k} {v:.1f}" for k, v in self.rates.items())
        if verbose and self.check:
            line += (f"; checked against fp32 on {self.check.get('check_patients')} patients: mean per-patient Dice "
                     f"drop {self.check.get('patient_dice_drop', 0):.4f}")
        return line


def open_fastest(model: str | Path, variant: str = "auto", **onnx_options):
    """An :class:`~gliomaseg.inference.onnx_backend.OnnxPredictor` for ``model`` or its checked int8 variant.

    ``variant``: ``auto`` (the faster of the two by the probe; fp32 alone when no checked variant sits beside),
    ``fp32`` (``model`` itself) or ``int8`` (the variant, an error when it is missing or unchecked).
    The predictor's ``choice`` attribute says which ran and why.
    """
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    if variant not in VARIANT_CHOICES:
        raise CheckpointError(f"unknown variant {variant!r}; valid: {', '.join(VARIANT_CHOICES)}")
    model = Path(model)
    sibling = variant_path(model)
    problem = check_problem(model, sibling) if sibling.is_file() else f"no {sibling.name} beside it"
    if variant == "int8" and problem:
        raise CheckpointError(f"{model}: no usable int8 variant ({problem})")
    if variant == "fp32" or problem:
        predictor = OnnxPredictor(model, **onnx_options)
        weights = predictor.meta.get("variant", {}).get("weights", "fp32") if isinstance(predictor.meta.get("variant"), dict) else "fp32"
        reason = "as asked" if variant == "fp32" else ("the file given" if not sibling.is_file() else problem)
        predictor.choice = Choice(model, weights, reason)
        return predictor
    check = _metadata(sibling)["variant"]
    if variant == "int8":
        predictor = OnnxPredictor(sibling, **onnx_options)
        predictor.choice = Choice(sibling, "int8", "as asked", check=check)
        return predictor
    candidates = {"fp32": OnnxPredictor(model, **onnx_options), "int8": OnnxPredictor(sibling, **onnx_options)}
    rates = {name: _best_rate(p) for name, p in candidates.items()}
    best = max(rates, key=rates.get)
    predictor = candidates[best]
    other = "int8" if best == "fp32" else "fp32"
    predictor.choice = Choice(Path(predictor.path), best, f"faster than {other} here, measured", rates,
                              check if best == "int8" else {})
    return predictor


def _best_rate(predictor) -> float:
    """Slices/s of ``predictor`` at its chosen setting: from its runtime probe, or a quick measurement when the
    setting was given (no probe ran)."""
    rates = predictor.settings.slices_per_second
    key = f"{predictor.settings.threads}x{predictor.settings.micro_batch}"
    if key in rates:
        return float(rates[key])
    import time

    import numpy as np

    images = np.random.default_rng(0).integers(0, 255, (4, predictor.image_size, predictor.image_size, 3), dtype=np.uint8)
    predictor.logits(images[:1])
    started = time.perf_counter()
    predictor.logits(images)
    return len(images) / (time.perf_counter() - started)
