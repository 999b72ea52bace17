"""Training throughput of Unet-resnet18 at 256x256, data loading included.

Compares the case study's way (decode every tif each step, fp32, NCHW) with ours (cached slices,
channels_last, fp32 and bf16-mixed autocast), and ours through the full ``gliomaseg train`` (Lightning)
path with fp32 and with ``--precision auto`` (the probe's choice and its reason are printed and stored),
with 1 and 2 loader workers, and, when tcmalloc is installed (``apt-get install libtcmalloc-minimal4``),
in a second process with tcmalloc preloaded (``LD_PRELOAD``) in place of glibc's malloc.

    .venv/bin/python benchmarks/train_throughput.py [--steps 8] [--synthetic] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, prepared_data, print_table, tcmalloc, write_results  # noqa: E402

from gliomaseg.data.dataset import SliceDataset  # noqa: E402
from gliomaseg.data.transforms import train_transforms  # noqa: E402
from gliomaseg.modeling.losses import build_loss  # noqa: E402
from gliomaseg.modeling.models import build_model  # noqa: E402

ROW_MARK = "auto row: "  # how the second process's one result line is found among whatever else it prints


def measure(data: Path, *, cache: bool, channels_last: bool, bf16: bool, workers: int, steps: int, warmup: int, size: int, batch: int) -> float:
    torch.manual_seed(0)
    dataset = SliceDataset(data / "data_train.csv", transform=train_transforms(), cache=cache, image_size=size)
    if cache:
        dataset.preload()  # decoded once before timing, as `gliomaseg train` does before the first epoch
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    model = build_model("unet", "resnet18").train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss("dice")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images_done, started = 0, None
    iterator = iter(loader)
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        images, masks = next(iterator)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            images_done += len(images)
    return images_done / (time.perf_counter() - started)


def lightning_path(data: Path, steps: int, size: int, batch: int, precision: str = "32", workers: int = 0) -> tuple[float, float, dict]:
    """Images/s through ``gliomaseg train``: all steps, steps after the first (start-up left out), and the precision choice.

    ``workers`` > 0 moves augmentation into loader processes, where it overlaps the model step on the same cores."""
    from gliomaseg.training.config import TrainConfig
    from gliomaseg.training.run import train

    out = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-run-"))
    result = train(TrainConfig(out=str(out), data=str(data), epochs=1, batch_size=batch, image_size=size, workers=workers, progress=False,
                               precision=precision, limit_train_batches=steps + 2, limit_val_batches=1))
    summary = result.summary
    return summary["train_images_per_second"], summary["train_images_per_second_after_first_batch"], summary["precision_choice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--synthetic", action="store_true", help="use synthetic data even when the real data is there")
    parser.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up (checks that the benchmark runs)")
    parser.add_argument("--auto-row-in", type=Path, help=argparse.SUPPRESS)  # internal: one auto row on this data, as JSON
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 2, 1
    if args.auto_row_in:
        print(ROW_MARK + json.dumps(lightning_path(args.auto_row_in, args.steps, args.size, args.batch, "auto")[:2]))
        return
    data, source = prepared_data(not args.synthetic)
    common = dict(steps=args.steps, warmup=args.warmup, size=args.size, batch=args.batch)
    rows = []
    cases = [
        ("case study: tif decoded every step, fp32, NCHW, 2 workers", dict(cache=False, channels_last=False, bf16=False, workers=2)),
        ("ours: cached slices, fp32, channels_last", dict(cache=True, channels_last=True, bf16=False, workers=0)),
        ("ours: cached slices, bf16-mixed, channels_last", dict(cache=True, channels_last=True, bf16=True, workers=0)),
    ]
    for label, options in cases:
        rows.append({"path": label, "images_per_s": round(measure(data, **options, **common), 2)})
        print(f"{label}: {rows[-1]['images_per_s']} images/s", flush=True)
    rate, steady, _ = lightning_path(data, args.steps, args.size, args.batch, "32")
    rows.append({"path": "ours through `gliomaseg train` (Lightning, fp32 channels_last, first step included)", "images_per_s": round(rate, 2)})
    rows.append({"path": "  the same after its first step", "images_per_s": steady})
    rate, steady, choice = lightning_path(data, args.steps, args.size, args.batch, "auto")
    rows.append({"path": f"ours through `gliomaseg train --precision auto` (picked {choice['precision']}, {choice['source']}; first step included)",
                 "images_per_s": round(rate, 2)})
    rows.append({"path": "  the same after its first step", "images_per_s": steady})
    print(f"--precision auto: {choice['reason']}", flush=True)
    for workers in (1, 2):  # 2: the default of a plain `gliomaseg train` on 2 cores; the cpu preset uses 0
        rate, steady, _ = lightning_path(data, args.steps, args.size, args.batch, "auto", workers=workers)
        rows.append({"path": f"ours through `gliomaseg train --precision auto --workers {workers}` (augmentation in loader processes)",
                     "images_per_s": round(rate, 2)})
        rows.append({"path": "  the same after its first step", "images_per_s": steady})
    library, preloaded = tcmalloc(), os.environ.get("LD_PRELOAD", "")
    if library and not preloaded:
        # The allocator is picked when a process starts, so this row runs in a process of its own.
        command = [sys.executable, __file__, "--auto-row-in", str(data), "--steps", str(args.steps), "--size", str(args.size), "--batch", str(args.batch)]
        done = subprocess.run(command, env={**os.environ, "LD_PRELOAD": library}, stdout=subprocess.PIPE, text=True, check=True)  # stderr shows
        rate, steady = json.loads(next(line for line in done.stdout.splitlines() if line.startswith(ROW_MARK))[len(ROW_MARK):])
        rows.append({"path": f"ours through `gliomaseg train --precision auto`, tcmalloc preloaded (LD_PRELOAD={library})",
                     "images_per_s": round(rate, 2)})
        rows.append({"path": "  the same after its first step", "images_per_s": steady})
    else:
        print("tcmalloc row left out: " + (f"LD_PRELOAD={preloaded} already applies to every row" if preloaded
                                           else "no tcmalloc (apt-get install libtcmalloc-minimal4)"), flush=True)
    base = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = f"{row['images_per_s'] / base:.2f}x" if row["images_per_s"] else "-"
    print()
    print(f"Unet-resnet18, {args.size}x{args.size}, batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up; data: {source}")
    print(f"machine: {machine()}")
    print_table(rows, ["path", "images_per_s", "speedup"])
    print(f"--precision auto picked {choice['precision']} ({choice['source']}): {choice['reason']}")
    path = write_results("train_throughput", rows, {"data": source, "machine": machine(), "precision_choice": choice, **vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
