"""Shared helpers for the benchmarks: the data they run on and how results are written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kaggle_3m"
RESULTS = Path(__file__).resolve().parent / "results"
# tcmalloc (Debian: libtcmalloc-minimal4), preloaded in place of glibc's malloc: PyTorch's CPU training
# allocates and frees large activation buffers every step, which glibc's allocator handles slowly.
TCMALLOC = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
            "/usr/lib64/libtcmalloc_minimal.so.4")


def prepared_data(use_real: bool = True) -> tuple[Path, str]:
    """A prepare output folder: the real kaggle_3m when it is beside the repo, else synthetic data."""
    from gliomaseg.data.prepare import prepare
    from gliomaseg.data.synth import generate

    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-"))
    if use_real and REAL_DATA.is_dir():
        prepare(REAL_DATA, work / "prepared", plots=False)
        return work / "prepared", f"real kaggle_3m ({REAL_DATA})"
    generate(work / "synth", patients=12, slices=20, seed=0)
    prepare(work / "synth", work / "prepared", plots=False)
    return work / "prepared", "synthetic (12 patients x ~20 slices)"


def tcmalloc() -> str | None:
    """The path of an installed tcmalloc library, or None."""
    return next((path for path in TCMALLOC if Path(path).is_file()), None)


# The instruction sets that decide which speed path wins (docs/benchmarks.md has one table per class of them).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> str:
    """The CPU model, its speed-relevant flags, cores, torch version and threads: what every figure is named with."""
    import torch

    from gliomaseg.core.machine import cpu_has, cpu_identity

    flags = " ".join(f for f in SPEED_FLAGS if cpu_has(f)) or "none of " + " ".join(SPEED_FLAGS)
    # torch's kernels limited to fewer instructions than the CPU has (an emulation of an older class, for torch only:
    # ONNX Runtime has no such switch)
    limits = ", ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    return (f"{cpu_identity()['cpu']} [{flags}]{f' with torch limited by {limits}' if limits else ''}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def write_results(name: str, rows: list[dict], meta: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))


def held_out_csvs(checkpoint: Path) -> tuple[Path, Path]:
    """The training and held-out CSVs of the run ``checkpoint`` belongs to (its config.json, resolved as training
    resolved them); a run without a held-out CSV (``--val-csv none``) is refused: nothing to check a variant on."""
    from gliomaseg.training.config import TrainConfig

    config = json.loads((Path(checkpoint).parent / "config.json").read_text())
    train, held_out = TrainConfig.from_dict(config).csv_paths()
    if held_out is None or not held_out.is_file():
        raise SystemExit(f"{checkpoint}: its run has no held-out CSV ({held_out}); give a run that validated on one")
    return train, held_out


def alternating_rates(runs: dict, slices: int, rounds: int) -> dict[str, list[float]]:
    """Slices/s of each ``runs[name]()`` (one call processes ``slices`` slices), timed in ``rounds`` rounds that each
    call every run once, in turn: on a 2-core machine whose speed drifts by minutes, runs are compared within rounds."""
    import time

    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            rates[name].append(round(slices / (time.perf_counter() - started), 1))
    return rates
