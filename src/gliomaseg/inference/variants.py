"""The fastest checked variant of an ONNX model on this machine: fp32 or its int8 beside it.

Naming rule: the int8 variant of ``NAME.onnx`` is ``NAME.int8.onnx`` in the same folder (what
``gliomaseg export --quantize int8 --out NAME.int8.onnx`` writes, and how the shipped pair is named). A variant
counts only when its ``gliomaseg`` metadata carries the check against fp32 that ``export`` stores (see
:mod:`gliomaseg.export.quantization`), that check passed its own limits, its model is the same one
(:data:`SAME_MODEL_FIELDS`) and, when recorded, its fp32 digest is that of the file beside it.

Which one runs is measured, not assumed: int8 ran 1.2-2.4x as fast as fp32 on CPUs with VNNI (the gain depends
on the model: docs/benchmarks.md), and can be slower on CPUs without fast int8. Each
candidate first finds its own threads and micro-batch (:mod:`gliomaseg.inference.onnx_backend`); then the two are
timed in alternating rounds at those settings, each keeping its best round, since on a small machine the speed
drifts within seconds and whichever ran in a slow moment would lose (the same slices, :data:`COMPARE_ROUNDS`
rounds, about a second). The faster wins; the choice is cached per machine, ONNX Runtime version and pair of files
(kind :data:`CACHE_KIND`), so a later run opens only the winner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from gliomaseg.core import machine
from gliomaseg.core.defaults import VARIANT_CHOICES
from gliomaseg.core.errors import CheckpointError
from gliomaseg.modeling.spec import read_onnx_metadata

# The fields a variant must share with its fp32 model to count as the same model.
SAME_MODEL_FIELDS = ("arch", "encoder", "decoder_channels", "image_size", "intensity", "threshold", "mean", "std")
CACHE_KIND = "onnx_variant"
COMPARE_ROUNDS = 3
COMPARE_SLICES = 8


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
    if not all(_finite(v) for v in numbers):
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
    paths = {"fp32": model, "int8": sibling}
    key = _choice_key(paths, onnx_options)
    use_cache = onnx_options.get("use_cache", True)
    hit = machine.cached(CACHE_KIND, key) if use_cache else None
    if _valid_hit(hit):
        # the loser's session is never opened
        best, rates = hit["variant"], hit["rates"]
        candidates = {best: OnnxPredictor(model, **onnx_options) if best == "fp32" else _open_sibling(sibling, onnx_options)}
        when = "measured earlier on this machine"
    else:
        candidates = {"fp32": OnnxPredictor(model, **onnx_options), "int8": _open_sibling(sibling, onnx_options)}
        rates, when = {}, "measured"
    if isinstance(candidates.get("int8"), CheckpointError):  # a damaged sibling: the model asked for still runs
        return _fp32_instead(candidates.get("fp32") or OnnxPredictor(model, **onnx_options), sibling, "load",
                             candidates["int8"])
    if not rates:
        try:
            rates = _compare(candidates)
        except CheckpointError as exc:  # the sibling opened but does not run (a wrong output): fp32 runs
            if not str(exc).startswith(f"{sibling}: "):
                raise
            return _fp32_instead(candidates["fp32"], sibling, "run", exc)
        if use_cache:
            machine.store(CACHE_KIND, key, {"variant": max(rates, key=rates.get), "rates": rates})
    best = max(rates, key=rates.get)
    predictor = candidates[best]
    other = "int8" if best == "fp32" else "fp32"
    predictor.choice = Choice(Path(predictor.path), best, f"faster than {other} here, {when}", rates,
                              check if best == "int8" else {})
    return predictor


def _fp32_instead(predictor, sibling: Path, step: str, failure: CheckpointError):
    """``predictor`` (the fp32 model) with the reason it runs: the sibling failed to ``step`` (load, run)."""
    predictor.choice = Choice(Path(predictor.path), "fp32",
                              f"{sibling.name} does not {step}: {str(failure).removeprefix(f'{sibling}: ')}")
    return predictor


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _open_sibling(sibling: Path, onnx_options: dict):
    """The int8 sibling's predictor, or the :class:`CheckpointError` that opening it raised (its metadata read, its
    weights may still be damaged)."""
    from gliomaseg.inference.onnx_backend import OnnxPredictor

    try:
        return OnnxPredictor(sibling, **onnx_options)
    except CheckpointError as exc:
        return exc


def _valid_hit(hit: dict | None) -> bool:
    """A cached choice to trust: both rates finite numbers, and the variant it names the faster of the two."""
    if not hit or not isinstance(hit.get("rates"), dict) or set(hit["rates"]) != {"fp32", "int8"}:
        return False
    rates = hit["rates"]
    if not all(_finite(v) for v in rates.values()):
        return False
    return hit.get("variant") == max(rates, key=rates.get)


def _choice_key(paths: dict[str, Path], onnx_options: dict) -> dict:
    """The cache key of a choice between ``paths``: this machine, ONNX Runtime, both files' digests and the options
    given (a choice measured with ``--threads 1`` says nothing about 2)."""
    import onnxruntime as ort

    from gliomaseg.inference.onnx_backend import file_digest

    given = {k: onnx_options.get(k) for k in ("threads", "micro_batch")}
    return machine.machine_key(onnxruntime=ort.__version__, providers=ort.get_available_providers(), given=given,
                               **{name: file_digest(path) for name, path in paths.items()})


def _compare(candidates: dict) -> dict[str, float]:
    """Slices/s of each predictor in ``candidates`` at its own setting, timed in :data:`COMPARE_ROUNDS` alternating
    rounds on the same :data:`COMPARE_SLICES` slices, each keeping its best round."""
    import numpy as np

    size = next(iter(candidates.values())).image_size
    images = np.random.default_rng(0).integers(0, 255, (COMPARE_SLICES, size, size, 3), dtype=np.uint8)
    for predictor in candidates.values():
        predictor.logits(images[: predictor.micro_batch])  # first call: ONNX Runtime's own warm-up
    best = dict.fromkeys(candidates, 0.0)
    for _ in range(COMPARE_ROUNDS):
        for name, predictor in candidates.items():
            best[name] = max(best[name], _rate(predictor, images))
    return {name: round(rate, 2) for name, rate in best.items()}


def _rate(predictor, images) -> float:
    """Slices/s of one pass of ``images`` through ``predictor``."""
    import time

    started = time.perf_counter()
    predictor.logits(images)
    return len(images) / (time.perf_counter() - started)
