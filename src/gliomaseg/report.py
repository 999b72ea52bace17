"""``gliomaseg report``: one self-contained HTML page (images embedded) from experiment and run folders."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import pandas as pd

from gliomaseg.data.files import write_text
from gliomaseg.errors import DataError

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}.grid img{width:24%;margin:.3%}
.note{color:#555;font-size:13px}"""


def _img(path_or_png: Path | bytes, alt: str) -> str:
    data = path_or_png.read_bytes() if isinstance(path_or_png, Path) else path_or_png
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _curves(run: Path) -> bytes | None:
    from gliomaseg.training import read_metrics
    from gliomaseg.visualization import plot_curves

    metrics = read_metrics(run)
    if metrics.empty:
        return None
    with tempfile.TemporaryDirectory() as folder:  # plot outside the run folder, which may be read-only
        return plot_curves(metrics, Path(folder) / "curves.png", title=run.name).read_bytes()


def _sample_overlays(run: Path, count: int = 4) -> list[bytes]:
    """Overlays of the validation slices with the most tumour, predicted by the run's best checkpoint."""
    from gliomaseg.data.files import read_image, read_slice_pair
    from gliomaseg.inference.segment import segment
    from gliomaseg.inference.predictor import load_checkpoint
    from gliomaseg.visualization import encode_png, overlay_contours

    slices_csv = run / "eval" / "slices.csv"
    if not (run / "best.ckpt").is_file() or not slices_csv.is_file():
        return []
    from gliomaseg.data.files import read_slices_csv

    slices = read_slices_csv(slices_csv, check_paths=False)  # its paths are relative to the eval folder
    picked = slices.sort_values("true_pixels", ascending=False).drop_duplicates("patient").head(count)
    predictor = load_checkpoint(run / "best.ckpt")
    out = []
    for row in picked.itertuples():
        image, truth = read_slice_pair(row.image_path, row.mask_path, expected_size=None)
        if predictor.info.intensity == "patient":
            # The model standardizes a patient over all its slices: segment them all, keep this slice's mask.
            paths = list(slices.loc[slices["patient"] == row.patient, "image_path"])
            _, masks = segment(predictor, [read_image(p) for p in paths])
            mask = masks[paths.index(row.image_path)]
        else:
            _, (mask,) = segment(predictor, [image])
        out.append(encode_png(overlay_contours(image, prediction=mask, truth=truth, legend=True)))
    return out


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0)


def build_report(runs: str | Path, out: str | Path) -> Path:
    """Collect every experiment (``results.csv``) and run (``summary.json``) under ``runs`` into one HTML file."""
    runs = Path(runs)
    if not runs.is_dir():
        raise DataError(f"{runs}: folder does not exist")
    experiments = sorted(p.parent for p in runs.rglob("results.csv"))
    run_dirs = sorted(p.parent for p in runs.rglob("summary.json") if (p.parent / "best.ckpt").is_file())
    if not experiments and not run_dirs:
        raise DataError(f"{runs}: no experiment (results.csv) or run (summary.json with best.ckpt) found")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>gliomaseg report</title><style>{STYLE}</style></head><body>",
             f"<h1>gliomaseg report</h1><p class='note'>From <code>{html.escape(str(runs.resolve()))}</code>. "
             "Scores are validation scores: each run's best checkpoint was picked on the CSV it is scored on. "
             "image-wise IoU scores an empty slice predicted empty as 1 (the case study's mIoU).</p>"]
    best: tuple[float, Path] | None = None
    for folder in experiments:
        results = pd.read_csv(folder / "results.csv")
        parts.append(f"<h2>Experiment: {html.escape(folder.name)}</h2>")
        shown = [c for c in ("run", "iou_imagewise", "reference_iou", "dice_imagewise", "iou_imagewise_tumour_slices", "iou_micro",
                             "patient_dice_mean", "patient_dice_median", "epochs", "train_seconds", "images_per_s", "parameters_M",
                             "gflops", "status") if c in results]
        parts.append(_table(results[shown]))
        if (folder / "results.png").is_file():
            parts.append(_img(folder / "results.png", f"{folder.name} results"))
        for row in results.itertuples():
            score = getattr(row, "iou_imagewise", float("nan"))
            if isinstance(score, float) and score == score and (best is None or score > best[0]):
                best = (score, folder / str(row.run))
    if run_dirs:
        parts.append("<h2>Training curves</h2>")
        for run in run_dirs:
            summary = json.loads((run / "summary.json").read_text())
            curves = _curves(run)
            parts.append(f"<h3>{html.escape(str(run.relative_to(runs)))}</h3><p class='note'>{summary['model']}-{summary['encoder']}, "
                         f"loss {summary['loss']}, {summary['epochs_completed']} epochs, "
                         f"{summary['train_images_per_second']} images/s</p>")
            if curves:
                parts.append(_img(curves, f"curves {run.name}"))
            if best is None:
                score = summary.get("best_val_patient_dice")
                best = (score, run) if score is not None else best
    if best is not None:
        overlays = _sample_overlays(best[1])
        if overlays:
            parts.append(f"<h2>Sample overlays from the best run ({html.escape(best[1].name)})</h2>"
                         "<p class='note'>prediction in green, ground truth in red; the validation slice with the most tumour of several patients.</p>"
                         "<div class='grid'>" + "".join(_img(o, "overlay") for o in overlays) + "</div>")
    parts.append("</body></html>")
    out = Path(out)
    write_text("\n".join(parts), out)
    return out
