"""Charts of a dataset: slices per patient and sample slices with their masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gliomaseg.core.plotting import pyplot, save_figure
from gliomaseg.data.overlay import overlay_contours


def plot_patient_slices(info: pd.DataFrame, path: str | Path) -> Path:
    """Slices per patient, stacked by tumour (diagnosis 1) and no tumour (diagnosis 0)."""
    plt = pyplot()
    counts = info.groupby("patient")["diagnosis"].agg(tumour="sum", total="count")
    counts["no_tumour"] = counts["total"] - counts["tumour"]
    fig, ax = plt.subplots(figsize=(max(8, 0.14 * len(counts) + 4), 4.5))
    x = np.arange(len(counts))
    ax.bar(x, counts["tumour"], color="#d62728", label=f"tumour (diagnosis 1): {int(counts['tumour'].sum())} slices")
    ax.bar(
        x,
        counts["no_tumour"],
        bottom=counts["tumour"],
        color="#1f77b4",
        label=f"no tumour (diagnosis 0): {int(counts['no_tumour'].sum())} slices",
    )
    ax.set_xticks(x)
    ax.set_xticklabels(counts.index, rotation=90, fontsize=6)
    ax.set_ylabel("slices")
    ax.set_title(f"Slices per patient ({len(counts)} patients, {len(info)} slices)")
    ax.legend()
    return save_figure(fig, path)


def plot_sample_slices(info: pd.DataFrame, path: str | Path, count: int = 6, seed: int = 0) -> Path:
    """A grid of sample slices (FLAIR channel and RGB) with the tumour contour in red."""
    from gliomaseg.data.files import read_slice_pair

    plt = pyplot()
    positives = info[info["diagnosis"] == 1]
    pool = positives if len(positives) >= count else info
    rows = pool.sample(n=min(count, len(pool)), random_state=seed)
    fig, axes = plt.subplots(2, len(rows), figsize=(2.2 * len(rows), 4.6), squeeze=False)
    for col, (_, row) in enumerate(rows.iterrows()):
        image, mask = read_slice_pair(row["image_path"], row["mask_path"], expected_size=None)
        axes[0, col].imshow(image)
        axes[0, col].set_title(f"{row['patient'][-13:]}\nslice {row['slice']}", fontsize=7)
        axes[1, col].imshow(overlay_contours(image, truth=mask))
        axes[1, col].set_title("mask (red)", fontsize=7)
        for ax in axes[:, col]:
            ax.axis("off")
    return save_figure(fig, path)
