"""Plain option values shared by the CLI and the modules; importing this loads nothing heavy."""

from __future__ import annotations

import os

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("plateau", "step", "cosine", "none")
DEFAULT_BATCH_SIZE = 8  # slices per predictor call in predict / evaluate
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed", "bf16": "bf16-mixed"}


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
