"""What a training run folder records, read without Lightning: its CSV logs and the epoch that ``best.ckpt`` holds.

pandas and torch are imported when a function is called, so a report over run folders loads neither Lightning
nor (for the logs) torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def read_metrics(run: str | Path) -> pd.DataFrame:
    """The CSV logs of every session of a run (resumed runs have several), one table by step."""
    import pandas as pd

    files = sorted(Path(run).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not files:
        return pd.DataFrame(columns=["epoch", "step"])
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def best_epoch(run: str | Path) -> int | None:
    """The epoch (counted from 1) that ``best.ckpt`` holds; None when there is none."""
    from gliomaseg.core.io import BEST_CHECKPOINT

    path = Path(run) / BEST_CHECKPOINT
    if not path.is_file():
        return None
    import torch

    try:  # mmap: only the small "epoch" entry is read, not the tensors of a 60 MB file
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1
