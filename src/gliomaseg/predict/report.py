"""``report.html`` of a predict run: one self-contained page a reader opens first (no CDN, no external URL).

Per patient: the tumour volume (mL only when the spacing is known), slices with predicted and with true
tumour, the 3D Dice when truth exists, the missing-sequence flag, the key slices (largest tumour, first,
last) as overlays and the GIF, all embedded as data URIs; and the model's summary.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from gliomaseg.core.units import Spacing, spacing_text, volume_text
from gliomaseg.modeling.card import crossval_summary_line

RESEARCH_ONLY = "Research use only, not for diagnosis."
SEQUENCE_NOTE = "{} missing (a copy of FLAIR)"


@dataclass
class PatientReport:
    """What the report shows of one patient; ``key_slices`` are (label, slice number, PNG bytes)."""

    name: str
    slices: int
    predicted_slices: int
    voxels: int
    spacing: Spacing | None = None
    true_slices: int | None = None
    true_voxels: int | None = None
    dice: float | None = None
    missing_sequences: str = ""
    key_slices: list[tuple[str, int, bytes]] = field(default_factory=list)
    gif: bytes | None = None


def key_slice_indices(masks: Sequence[np.ndarray]) -> list[tuple[str, int]]:
    """(label, index) of the slices worth looking at: the largest predicted tumour, the first and the last slice with tumour.

    A patient with no predicted tumour gets its middle slice, labelled so. Duplicates are dropped.
    """
    areas = [int(np.count_nonzero(m)) for m in masks]
    with_tumour = [i for i, a in enumerate(areas) if a]
    if not with_tumour:
        return [("middle slice (no tumour predicted)", len(masks) // 2)]
    picks = [("largest tumour", int(np.argmax(areas))), ("first slice with tumour", with_tumour[0]),
             ("last slice with tumour", with_tumour[-1])]
    seen: set[int] = set()
    return [(label, i) for label, i in picks if not (i in seen or seen.add(i))]


def missing_note(value: object) -> str:
    """``pre-contrast missing (a copy of FLAIR)`` from a ``missing_sequences`` value (empty, NaN or absent: "")."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return ""
    return SEQUENCE_NOTE.format(" and ".join(str(value).split("+")))


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _patient_html(p: PatientReport) -> str:
    e = html.escape
    rows = [("slices", str(p.slices)), ("slices with predicted tumour", str(p.predicted_slices)),
            ("predicted tumour volume", volume_text(p.voxels, p.spacing))]
    if p.true_slices is not None:
        rows.append(("slices with true tumour", str(p.true_slices)))
    if p.true_voxels is not None:
        rows.append(("true tumour volume", volume_text(p.true_voxels, p.spacing)))
    if p.dice is not None:
        rows.append(("3D Dice against the truth", f"{p.dice:.3f}"))
    rows.append(("voxel size", spacing_text(p.spacing)))
    note = missing_note(p.missing_sequences)
    if note:
        rows.append(("sequences", note))
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    figures = "".join(f'<figure><img alt="{e(label)}, slice {number}" src="{_data_uri(png, "image/png")}">'
                      f"<figcaption>{e(label)}: slice {number}</figcaption></figure>" for label, number, png in p.key_slices)
    gif = (f'<figure><img alt="all slices of {e(p.name)}" src="{_data_uri(p.gif, "image/gif")}">'
           "<figcaption>every slice, in order</figcaption></figure>") if p.gif else ""
    return f'<section><h2>{e(p.name)}</h2><table class="facts">{table}</table><div class="slices">{figures}{gif}</div></section>'


def render_run_report(patients: Sequence[PatientReport], model: dict, *, title: str = "gliomaseg predictions",
                      outputs: Sequence[tuple[str, str]] = ()) -> str:
    """The page as text. ``model``: ``name`` and optional ``validation`` (a sentence) and ``card`` (text);
    ``outputs``: (what, relative path) of the files beside the report."""
    e = html.escape
    legend = ("Overlays: FLAIR in grey, prediction outlined in yellow, truth (when given) in red.")
    model_lines = [f"<p>Model: <b>{e(model.get('name', 'unknown'))}</b>"
                   + (f"; {e(model['validation'])}" if model.get("validation") else "") + ".</p>"]
    if model.get("card"):
        model_lines.append(f"<details><summary>model card</summary><pre>{e(model['card'])}</pre></details>")
    files = "".join(f"<li>{e(what)}: <code>{e(path)}</code></li>" for what, path in outputs)
    style = ("body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}"
             ".warn{background:#fff3cd;border:1px solid #e0c060;padding:.4em .8em}table.facts th{text-align:left;padding-right:1em;"
             "font-weight:normal;color:#555}.slices{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}img{width:256px;"
             "image-rendering:pixelated;border:1px solid #ccc}pre{white-space:pre-wrap;font-size:12px}section{border-top:1px solid #ddd;margin-top:1em}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>{style}</style></head><body>"
            f"<h1>{e(title)}</h1><p class=\"warn\">{RESEARCH_ONLY} Volumes are in mL only where the voxel size is known "
            f"(kaggle_3m records none: then voxels, marked 'spacing unknown').</p>{''.join(model_lines)}<p>{legend}</p>"
            + (f"<p>Files beside this page:</p><ul>{files}</ul>" if files else "")
            + "".join(_patient_html(p) for p in patients) + "</body></html>\n")


def model_summary(predictor, shipped: bool = False) -> dict:
    """``name``, ``validation`` and ``card`` of a predictor, for the report and the viewer (what it knows, nothing made up).

    ``shipped``: the model inside gliomaseg, whose card and cross-validated Dice ship with it.
    """
    from gliomaseg import assets

    info = getattr(predictor, "info", None)
    summary: dict = {"name": f"{info.arch}-{info.encoder}" if info is not None else "unknown model"}
    card = getattr(predictor, "card", None)  # the model's card (an ONNX model's metadata, a checkpoint's entry)
    if isinstance(card, dict):
        dice = ((card.get("validation") or {}).get("best_val_patient_dice") or {}).get("value")
        if card.get("cross_validation"):  # the recipe on held-out patients: what to expect, so it leads
            summary["validation"] = crossval_summary_line(card["cross_validation"])
        elif isinstance(dice, (int, float)):
            summary["validation"] = f"validation mean per-patient Dice {dice:.3f} (the epoch was picked on it: optimistic)"
    if shipped:
        summary["card"] = assets.shipped_card_text()
    return summary


def write_run_report(path: Path, patients: Sequence[PatientReport], model: dict, outputs: Sequence[tuple[str, str]] = ()) -> Path:
    from gliomaseg.core.io import write_text

    return write_text(render_run_report(patients, model, outputs=outputs), path)
