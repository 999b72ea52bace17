"""``gliomaseg report``: one self-contained HTML page (images embedded) from experiment and run folders.

It reads live experiment folders (``<exp>/<run>/eval/patients.csv``, checkpoints) and the committed results alike
(``docs/results``: ``<exp>/results.csv``, ``patients.csv``, ``crossval.json``, ``experiment.json``, a runner's
``results.md`` kept alone as ``<exp>.md``). Its charts plot per-patient Dice with its noise; image-wise IoU, where an
empty slice predicted empty scores 1, stays a table column beside the case study's number.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from gliomaseg.core.errors import DataError
from gliomaseg.core.io import BEST_CHECKPOINT, FINAL_CHECKPOINT, LAST_CHECKPOINT, write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;font-size:14px}
.wrap{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12px;margin:.6em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}th{background:#f3f3f3;white-space:normal}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}.grid img{width:24%;margin:.3%}
.note{color:#555;font-size:13px}code{overflow-wrap:anywhere}"""
SEED_RUN = re.compile(r"(.+)-seed\d+")
MARKDOWN_EXPERIMENT = re.compile(r"# Experiment `([^`]+)`: (.*)")
# A folder's own table (``levers_gpu/levers_gpu.csv``) in the names of results.csv; the second name is training's
# logged validation score of that epoch, taken where evaluate did not score the run.
ALIASES = {"patient_dice_mean": ("best_patient_dice_mean", "best_epoch_val_dice"),
           "patient_dice_median": ("best_patient_dice_median", None),
           "iou_imagewise": ("best_iou_imagewise", None),
           "iou_imagewise_tumour_slices": ("best_iou_imagewise_tumour_slices", None),
           "patient_dice_mean_last": ("last_patient_dice_mean", "last_epoch_val_dice"),
           "patient_dice_median_last": ("last_patient_dice_median", "last_epoch_val_patient_dice_median"),
           "iou_imagewise_last": ("last_iou_imagewise", "last_epoch_val_iou_imagewise")}
MATCH = 1e-4  # a per-patient file belongs to a score when its mean is that score


def standard_error(values: pd.Series) -> float | None:
    """Standard error of a mean over patients (sd / sqrt(n)); None under 2 values."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else None


def paired_noise(first_mean: float, second_mean: float, first: pd.Series | None, second: pd.Series | None) -> tuple[float, str]:
    """Run-to-run noise of a mean per-patient Dice from two runs of one setting, and a sentence that says how it was found.

    The larger of the gap between the two means and two standard errors of their per-patient differences: two means
    can agree by luck while single patients swing by 0.3 or more, and the paired spread says how far they can drift.
    """
    gap = abs(float(first_mean) - float(second_mean))
    if first is None or second is None:
        return gap, f"{gap:.3f}, the gap between the two runs' means (no per-patient results to pair)"
    differences = (first - second).dropna()
    if len(differences) < 2:
        return gap, f"{gap:.3f}, the gap between the two runs' means"
    sd = float(differences.std(ddof=1))
    paired = 2 * sd / math.sqrt(len(differences))
    return max(gap, paired), (f"{max(gap, paired):.3f}. The two runs' means differ by {gap:.3f}, but their per-patient Dice differ "
                              f"with a standard deviation of {sd:.3f} over {len(differences)} patients, so "
                              f"two runs' means are uncertain by about {paired:.3f} (two standard errors); the larger counts")


def _patient_files(folder: Path, run: str) -> list[tuple[str, pd.Series]]:
    """Every per-patient Dice table of ``run`` in an experiment folder, live or committed, as (file name, dice by patient)."""
    found = []
    for path in (folder / run / "eval" / "patients.csv", folder / run / "eval_last" / "patients.csv",
                 folder / f"{run}_patients.csv", folder / f"{run}_patients_last.csv", folder / "patients.csv"):
        if not path.is_file():
            continue
        table = pd.read_csv(path, dtype={"patient": str})
        if path.name == "patients.csv" and path.parent == folder:  # the committed one: a fold or run column names the run
            key = next((c for c in ("run", "fold") if c in table), None)
            if key is None:
                continue
            table = table[table[key].astype(str) == run]
        if len(table) and {"patient", "dice_3d"} <= set(table):
            found.append((path.relative_to(folder).as_posix(), table.set_index("patient")["dice_3d"].astype(float)))
    return found


def run_patient_dice(folder: Path, run: str, mean: float | None) -> tuple[str, pd.Series] | None:
    """The per-patient Dice behind a run's mean (best or last): the file whose patients average to ``mean``."""
    if mean is None or mean != mean:
        return None
    return next(((name, dice) for name, dice in _patient_files(folder, run) if abs(float(dice.mean()) - float(mean)) < MATCH), None)


def _img(path_or_png: Path | bytes, alt: str) -> str:
    data = path_or_png.read_bytes() if isinstance(path_or_png, Path) else path_or_png
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _curves(run: Path) -> bytes | None:
    from gliomaseg.evaluation.charts import plot_curves
    from gliomaseg.training.records import read_metrics

    metrics = read_metrics(run)
    if metrics.empty:
        return None
    with tempfile.TemporaryDirectory() as folder:  # plot outside the run folder, which may be read-only
        return plot_curves(metrics, Path(folder) / "curves.png", title=run.name).read_bytes()


def _sample_overlays(run: Path, count: int = 4) -> list[bytes]:
    """Overlays of the validation slices with the most tumour, predicted by the run's best checkpoint."""
    from gliomaseg.data.files import read_image, read_slice_pair
    from gliomaseg.data.overlay import encode_png, overlay_contours
    from gliomaseg.inference.segment import segment
    from gliomaseg.inference.torch_backend import load_checkpoint

    slices_csv = run / "eval" / "slices.csv"
    if not (run / BEST_CHECKPOINT).is_file() or not slices_csv.is_file():
        return []
    from gliomaseg.data.files import read_slices_csv

    slices = read_slices_csv(slices_csv, check_paths=False)  # its paths are relative to the eval folder
    picked = slices.sort_values("true_pixels", ascending=False).drop_duplicates("patient").head(count)
    predictor = load_checkpoint(run / BEST_CHECKPOINT)
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


@dataclass
class Section:
    """One experiment on the page: its runs in results.csv's column names, and what to say about them."""

    name: str
    source: str  # the file it was read from, relative to --runs
    description: str
    results: pd.DataFrame
    folder: Path | None  # where its per-patient files are; None for a table kept only as Markdown
    notes: list[str] = field(default_factory=list)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _markdown_table(text: str, source: Path) -> pd.DataFrame:
    """The first Markdown table of ``text`` (``-`` read as missing, numbers as numbers)."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.strip().startswith("|")]
    if len(rows) < 2:
        raise DataError(f"{source}: no Markdown table of runs")
    header = [c.strip() for c in rows[0]]
    body = [[c.strip() for c in row] for row in rows[2:] if len(row) == len(header)]
    frame = pd.DataFrame(body, columns=header).replace("-", None)
    for column in frame:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if column != "run" and numbers.notna().sum() == frame[column].notna().sum():
            frame[column] = numbers
    return frame


def _description(folder: Path, name: str) -> str:
    """experiment.json's description, else the runner's results.md heading, else the YAML beside it or the shipped one."""
    meta = folder / "experiment.json"
    if meta.is_file():
        description = json.loads(meta.read_text()).get("description")
        if description:
            return str(description)
    if (folder / "results.md").is_file():
        heading = MARKDOWN_EXPERIMENT.match((folder / "results.md").read_text().split("\n", 1)[0])
        if heading:
            return heading[2]
    from gliomaseg.experiments.spec import CONFIG_DIR

    for path in (folder / f"{name}.yaml", CONFIG_DIR / f"{name}.yaml"):
        if path.is_file():
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(raw, dict) and raw.get("description"):
                return str(raw["description"])
    return ""


def _own_table(folder: Path, runs: Path) -> Section | None:
    """A folder without results.csv whose own ``<folder>.csv`` lists runs (``levers_gpu``), in results.csv's names."""
    path = folder / f"{folder.name}.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if "run" not in table:
        return None
    results, logged = pd.DataFrame({"run": table["run"].astype(str)}), False
    for column, (evaluated, fallback) in ALIASES.items():
        values = pd.to_numeric(table[evaluated], errors="coerce") if evaluated in table else pd.Series(float("nan"), index=table.index)
        if fallback in table and values.isna().any():
            logged = True
            values = values.fillna(pd.to_numeric(table[fallback], errors="coerce"))
        results[column] = values
    for column in ("epochs", "best_epoch", "images_per_s"):
        if column in table:
            results[column] = table[column]
    if "train_minutes" in table:
        results["train_seconds"] = pd.to_numeric(table["train_minutes"], errors="coerce") * 60
    section = Section(folder.name, path.relative_to(runs).as_posix(), _description(folder, folder.name), results, folder)
    if logged:
        section.notes.append("Where <code>evaluate</code> did not score a run, its numbers are the validation scores training "
                             "logged for that epoch.")
    return section


def _sections(runs: Path) -> list[Section]:
    """Every experiment under ``runs``: folders with results.csv, folders with their own table, runners' tables kept as Markdown."""
    sections = []
    for path in sorted(runs.rglob("results.csv")):
        folder = path.parent
        sections.append(Section(folder.name, path.relative_to(runs).as_posix(), _description(folder, folder.name),
                                pd.read_csv(path), folder))
    for folder in sorted(p for p in [runs, *runs.rglob("*")] if p.is_dir() and not (p / "results.csv").is_file()):
        section = _own_table(folder, runs)
        if section:
            sections.append(section)
    known = {s.name for s in sections}
    for path in sorted(runs.rglob("*.md")):
        lines = path.read_text(encoding="utf-8").split("\n", 1)
        heading = MARKDOWN_EXPERIMENT.match(lines[0])
        if heading and heading[1] not in known and path.name != "results.md":
            known.add(heading[1])
            sections.append(Section(heading[1], path.relative_to(runs).as_posix(), heading[2], _markdown_table(path.read_text(), path), None,
                                    ["Kept as the runner's Markdown table only: no per-patient rows, so no error bars."]))
    return sorted(sections, key=lambda s: s.name)


def _fold_summary(section: Section) -> dict | None:
    """crossval.json of a cross-validation, else the mean and sd over its finished fold runs; None without folds."""
    if section.folder is not None and (section.folder / "crossval.json").is_file():
        return json.loads((section.folder / "crossval.json").read_text())
    results = section.results
    if "split" not in results:
        return None
    folds = results[results["split"].astype(str).str.fullmatch(r"fold\d+") & (results.get("status", "done") == "done")]
    if len(folds) < 2:
        return None
    summary: dict = {"folds": list(folds["run"])}
    for column in ("patient_dice_mean", "patient_dice_mean_last"):
        if column in folds:
            values = pd.to_numeric(folds[column], errors="coerce").dropna()
            if len(values) > 1:
                summary[column] = {"mean": float(values.mean()), "sd_over_folds": float(values.std(ddof=1)), "folds": len(values)}
    return summary


LABELS = {"run": "run", "patient_dice_mean": "Dice mean (best)", "se_best": "± (best)", "patient_dice_median": "Dice median (best)",
          "patient_dice_mean_last": "Dice mean (last)", "se_last": "± (last)", "patient_dice_median_last": "Dice median (last)",
          "patients": "patients", "iou_imagewise_tumour_slices": "tumour-slice IoU", "iou_imagewise": "image-wise IoU (ours)",
          "reference_iou": "case study (image-wise IoU)", "iou_imagewise_last": "image-wise IoU (last)", "best_epoch": "best epoch",
          "epochs": "epochs", "train_seconds": "train s", "images_per_s": "images/s", "gflops": "GFLOPs", "status": "status"}


FORMATS = {"patients": 0, "best_epoch": 0, "epochs": 0, "train_seconds": 0, "images_per_s": 1, "gflops": 2}


def _scored(section: Section) -> tuple[pd.DataFrame, list[str]]:
    """The section's runs with the noise of each mean (``se_best``, ``se_last``), a fold-mean row where there are folds, and notes."""
    table, notes, used = section.results.copy(), [], set()
    for which, column in (("best", "patient_dice_mean"), ("last", "patient_dice_mean_last")):
        if column not in table:
            continue
        errors, counts = [], []
        for run, mean in zip(table["run"].astype(str), table[column]):
            found = run_patient_dice(section.folder, run, _number(mean)) if section.folder is not None else None
            errors.append(standard_error(found[1]) if found else None)
            counts.append(len(found[1]) if found else None)
            if found:  # named for the page: one pattern for live runs' eval folders, the file for committed ones
                used.add(re.sub(f"^{re.escape(run)}/", "RUN/", found[0]))
        table[f"se_{which}"] = errors
        if "patients" not in table or table["patients"].isna().all():
            table["patients"] = counts
        else:
            table["patients"] = table["patients"].fillna(pd.Series(counts, index=table.index))
    if used:
        notes.append(f"± is the standard error of the mean over the run's patients (from {', '.join(f'<code>{html.escape(u)}</code>' for u in sorted(used))}).")
    folds = _fold_summary(section)
    if folds:
        row: dict = {"run": f"mean of {len(folds.get('folds', []))} folds", "status": "± is the sd over folds"}
        for column, se in (("patient_dice_mean", "se_best"), ("patient_dice_mean_last", "se_last"), ("patient_dice_median", None),
                           ("iou_imagewise_tumour_slices", None), ("iou_imagewise", None)):
            if isinstance(folds.get(column), dict):
                row[column] = folds[column]["mean"]
                if se:
                    row[se] = folds[column].get("sd_over_folds")
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        for name in ("best", "last"):
            pooled = folds.get(f"pooled_patient_dice_{name}")
            if isinstance(pooled, dict) and pooled.get("sd") is not None:
                notes.append(f"Pooled over the {pooled['patients']} held-out patients ({name}): mean {pooled['mean']:.3f}, median "
                             f"{pooled['median']:.3f}, standard error {pooled['sd'] / math.sqrt(pooled['patients']):.3f}.")
    return table, notes


def seed_pairs(section: Section) -> list[tuple[str, str, float, str]]:
    """Run-to-run noise for each run repeated with another seed (``Unet`` and ``Unet-seed7``): (run, repeat, noise, how)."""
    if "patient_dice_mean" not in section.results:
        return []
    done = section.results[section.results.get("status", pd.Series("done", index=section.results.index)).astype(str) == "done"]
    means = dict(zip(done["run"].astype(str), pd.to_numeric(done["patient_dice_mean"], errors="coerce")))
    pairs = []
    for repeat, mean in means.items():
        match = SEED_RUN.fullmatch(repeat)
        if match and match[1] in means and mean == mean and means[match[1]] == means[match[1]]:
            patients = [run_patient_dice(section.folder, run, means[run]) if section.folder is not None else None for run in (match[1], repeat)]
            noise, how = paired_noise(means[match[1]], mean, *[(p[1] if p else None) for p in patients])
            if not all(patients):  # two means alone can agree by luck: say what the number is not
                how += "; with no per-patient rows to pair, only a lower bound on the noise"
            pairs.append((match[1], repeat, noise, how))
    return pairs


def _dice_chart(section: Section, table: pd.DataFrame) -> bytes | None:
    """Bars of per-patient Dice per run (best, and last where scored) with their noise as error bars, as PNG bytes."""
    from gliomaseg.evaluation.charts import plot_bar_panels

    series, errors = {}, {}
    for which, column in ((BEST_CHECKPOINT, "patient_dice_mean"), (LAST_CHECKPOINT, "patient_dice_mean_last")):
        if column in table and table[column].notna().any():
            series[which] = [_number(v) for v in table[column]]
            errors[which] = [_number(v) for v in table[f"se_{'best' if which == BEST_CHECKPOINT else 'last'}"]]
    if not series:
        return None
    if len(series) == 1:
        series, errors = {"ours": next(iter(series.values()))}, {"ours": next(iter(errors.values()))}
    with tempfile.TemporaryDirectory() as folder:
        return plot_bar_panels(list(table["run"].astype(str)), [("mean per-patient Dice (validation patients)", series)],
                               Path(folder) / "dice.png", title=f"{section.name}: per-patient Dice, error bars the noise",
                               errors=[errors], max_width=11).read_bytes()


def _table(frame: pd.DataFrame) -> str:
    columns = [c for c in LABELS if c in frame and not frame[c].isna().all()]
    formats = {column: (lambda v, digits=digits: "-" if v is None or v != v else f"{float(v):.{digits}f}")
               for column, digits in FORMATS.items() if column in columns}
    shown = frame[columns].rename(columns=LABELS)
    cells = shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0,
                          formatters={LABELS[c]: f for c, f in formats.items()})
    return f"<div class='wrap'>{cells}</div>"


def _scrub(text: str, runs: Path) -> str:
    """``text`` with no absolute path of the working folder or of --runs (base64 images left as they are)."""
    names = {str(Path.cwd().resolve()): ".", str(Path.cwd()): ".", str(runs.resolve()): runs.name, str(runs.absolute()): runs.name}
    if not runs.is_absolute():
        names[str(runs.resolve())] = names[str(runs.absolute())] = runs.as_posix()
    pieces = re.split(r"(data:image/png;base64,[A-Za-z0-9+/=]+)", text)
    for index in range(0, len(pieces), 2):
        for absolute in sorted(names, key=len, reverse=True):
            if absolute not in ("", "/"):
                pieces[index] = pieces[index].replace(absolute, names[absolute])
    return "".join(pieces)


def _run_model(run: Path) -> Path | None:
    """The model a run folder holds: the one its ``summary.json`` names (``model_checkpoint``, written by training),
    else ``best.ckpt`` (picked on validation), ``final.ckpt`` (a ``--val-csv none`` run: no pick) or ``last.ckpt``
    (an unfinished run); ``None`` when it holds none. Only the file name is used: the run may have moved."""
    try:
        named = json.loads((run / "summary.json").read_text()).get("model_checkpoint")
    except (OSError, ValueError, AttributeError):
        named = None
    names = ([Path(named).name] if isinstance(named, str) else []) + [BEST_CHECKPOINT, FINAL_CHECKPOINT, LAST_CHECKPOINT]
    return next((run / name for name in names if (run / name).is_file()), None)


def build_report(runs: str | Path, out: str | Path) -> Path:
    """Collect every experiment (``results.csv``, a folder's own table, a runner's table kept as Markdown) and run
    (``summary.json``) under ``runs`` into one HTML file that names no absolute path."""
    runs = Path(runs)
    if not runs.is_dir():
        raise DataError(f"{runs}: folder does not exist")
    sections = _sections(runs)
    models = {p.parent: _run_model(p.parent) for p in runs.rglob("summary.json")}
    run_dirs = sorted(run for run, model in models.items() if model is not None)
    if not sections and not run_dirs:
        raise DataError(f"{runs}: no experiment (results.csv) or run (summary.json with a checkpoint) found")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>gliomaseg report</title><style>{STYLE}</style></head><body>",
             f"<h1>gliomaseg report</h1><p class='note'>From <code>{html.escape(runs.name if runs.is_absolute() else runs.as_posix())}</code>. "
             "Scores are validation scores: each run's best checkpoint (<code>best.ckpt</code>) was picked on the patients it is "
             "scored on; <code>last.ckpt</code>, where scored, involves no pick. The headline is the mean per-patient 3D Dice; "
             "the charts plot it with its noise (error bars: the standard error over the run's patients, or the sd over folds "
             "for a cross-validation's mean). Image-wise IoU scores an empty slice predicted empty as 1 (the case study's mIoU); "
             "it is a column beside the case study's number, not a chart.</p>"]
    pairs = [(section, pair) for section in sections for pair in seed_pairs(section)]
    if pairs:
        parts.append("<p class='note'>Run-to-run noise of a mean per-patient Dice (one setting, two seeds): "
                     + "; ".join(f"{html.escape(s.name)} ({html.escape(a)} vs {html.escape(b)}): {html.escape(how)}" for s, (a, b, _, how) in pairs)
                     + ". Differences between runs smaller than this are not findings.</p>")
    if sections:
        parts.append("<p class='note'>Experiments: " + ", ".join(f"<a href='#exp-{html.escape(s.name)}'>{html.escape(s.name)}</a>"
                                                                   for s in sections) + "</p>")
    best: tuple[float, Path] | None = None
    for section in sections:
        table, notes = _scored(section)
        parts.append(f"<h2 id='exp-{html.escape(section.name)}'>Experiment: {html.escape(section.name)}</h2>")
        if section.description:
            parts.append(f"<p>{html.escape(section.description)}</p>")
        sources = [f"From <code>{html.escape(section.source)}</code>."]
        for extra in (f"{section.name}.md", f"{section.name}/case_study_claims.md"):
            if (runs / extra).is_file() and extra != section.source:
                sources.append(f"Write-up: <code>{html.escape(extra)}</code>.")
        parts.append(f"<p class='note'>{' '.join(sources + section.notes + notes)}</p>")
        for a, b, _, how in seed_pairs(section):
            parts.append(f"<p class='note'>Run-to-run noise ({html.escape(a)} vs {html.escape(b)}): {html.escape(how)}.</p>")
        parts.append(_table(table))
        chart = _dice_chart(section, table)
        if chart:
            parts.append(_img(chart, f"{section.name}: per-patient Dice"))
        if section.folder is not None and "patient_dice_mean" in section.results:
            for run, score in zip(section.results["run"].astype(str), section.results["patient_dice_mean"]):
                score = _number(score)
                if score is not None and (section.folder / run / BEST_CHECKPOINT).is_file() and (best is None or score > best[0]):
                    best = (score, section.folder / run)
    if run_dirs:
        parts.append("<h2>Training curves</h2>")
        for run in run_dirs:
            summary = json.loads((run / "summary.json").read_text())
            curves = _curves(run)
            model = models[run]
            picked = ("the best epoch on its validation patients" if model.name == BEST_CHECKPOINT
                      else "no validation pick" if model.name == FINAL_CHECKPOINT else "its last epoch")
            parts.append(f"<h3>{html.escape(run.relative_to(runs).as_posix())}</h3><p class='note'>{summary['model']}-{summary['encoder']}, "
                         f"loss {summary['loss']}, {summary['epochs_completed']} epochs, "
                         f"{summary['train_images_per_second']} images/s; model <code>{model.name}</code> ({picked})</p>")
            if curves:
                parts.append(_img(curves, f"curves {run.name}"))
            if best is None:
                score = summary.get("best_val_patient_dice")
                best = (score, run) if score is not None else best
    if best is not None:
        overlays = _sample_overlays(best[1])
        if overlays:
            parts.append(f"<h2>Sample overlays from the best run ({html.escape(best[1].name)}, by per-patient Dice)</h2>"
                         "<p class='note'>prediction in yellow, ground truth in red; the validation slice with the most tumour of several patients.</p>"
                         "<div class='grid'>" + "".join(_img(o, "overlay") for o in overlays) + "</div>")
    parts.append("</body></html>")
    out = Path(out)
    write_text(_scrub("\n".join(parts), runs), out)
    return out
