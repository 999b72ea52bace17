"""Charts of scores: grouped bars (with their noise) and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gliomaseg.core.plotting import pyplot, save_figure

COLOURS = ("#2ca02c", "#1f77b4", "#7f7f7f", "#ff7f0e")


def _bar_axis(ax, labels: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str,
              errors: dict[str, Sequence[float | None]] | None = None) -> None:
    """Grouped bars on ``ax``: one group a label, one bar a series (None or NaN draws no bar), values printed on top.

    ``errors`` (same keys as ``series``) draws each bar's noise as an error bar; None or NaN draws none.
    """
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else float(v) for v in values]
        spread = [np.nan if v is None else float(v) for v in (errors or {}).get(name, [None] * len(heights))]
        bars = ax.bar(x + (index - (len(series) - 1) / 2) * width, heights, width, label=name, color=COLOURS[index % len(COLOURS)])
        for bar, value, error in zip(bars, heights, spread):
            if value == value:  # not NaN
                centre = bar.get_x() + bar.get_width() / 2
                if error == error:  # a bar without a measured noise gets no error bar, not one of length 0
                    ax.errorbar(centre, value, yerr=error, fmt="none", ecolor="#222", capsize=2, elinewidth=0.8)
                ax.annotate(f"{value:.2f}", (centre, value + (error if error == error else 0)), ha="center", va="bottom", fontsize=6)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.08)


def plot_bars(
    labels: Sequence[str], values: Sequence[float], path: str | Path, *, title: str, ylabel: str,
    reference: Sequence[float | None] | None = None, reference_label: str = "reference",
) -> Path:
    """A bar chart of one value per label, optionally with a reference value beside each bar."""
    series = {"ours": values, **({reference_label: reference} if reference is not None else {})}
    return plot_bar_panels(labels, [(ylabel, series)], path, title=title)


def plot_bar_panels(labels: Sequence[str], panels: Sequence[tuple[str, dict[str, Sequence[float | None]]]],
                    path: str | Path, *, title: str, errors: Sequence[dict[str, Sequence[float | None]] | None] | None = None,
                    max_width: float | None = None) -> Path:
    """One bar chart per panel side by side, each ``(ylabel, {series name: one value per label})``.

    ``errors``: per panel, error bars as ``_bar_axis`` takes them; ``max_width`` caps the figure's width in inches.
    """
    plt = pyplot()
    width = max(6, 0.5 * len(labels) + 3)
    width = min(width, max_width / len(panels)) if max_width else width
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4), squeeze=False)
    for index, (ax, (ylabel, series)) in enumerate(zip(axes[0], panels)):
        _bar_axis(ax, labels, series, ylabel, errors[index] if errors else None)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_curves(metrics: pd.DataFrame, path: str | Path, title: str = "training curves") -> Path:
    """Loss, and validation per-patient Dice (the checkpoint pick) and image-wise scores per epoch, from Lightning's ``metrics.csv``."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for column, ax in (("train_loss_epoch", left), ("val_loss", left), ("val_patient_dice", right), ("val_iou_imagewise", right), ("val_iou_tumour_slices", right)):
        if column in metrics.columns:
            series = metrics[["epoch", column]].dropna()
            ax.plot(series["epoch"], series[column], marker="o", ms=3, label=column)
    left.set_title("loss")
    right.set_title("validation")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)
