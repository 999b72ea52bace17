"""Speed of the shipped architecture (Unet + EfficientNet-Lite0, 256 px) at lighter decoder widths: the speed half of
the Dice-vs-slices/s frontier (the Dice half needs the cross-validation, docs/results/).

For each ``--decoder-channels`` setting: GFLOP per slice, ONNX Runtime fp32 and int8 slices/s at 2 threads (threads and
micro-batch chosen by the same probe as ``predict``; all models timed in alternating ``--rounds``, each keeping its best),
on real held-out slices, and training images/s (batch
``--train-batch``, fp32 and bf16-mixed where the CPU has bf16, by the precision probe's own timing: forward, dice loss,
backward, optimizer step, channels_last; the fastest of ``--train-steps`` steps). Random weights by default: a quick
look, but not the trained model's speed (trained weights include denormal ones, which slowed ONNX Runtime's fp32 path
before gliomaseg flushed them, :mod:`gliomaseg.modeling.denormals`; int8 speed moved with the weights too),
and the int8 check's Dice is not meaningful then (its bound is lifted). ``--checkpoints`` times trained runs instead
(e.g. one fold of ``crossval_robust`` and of ``crossval_light``): int8 is calibrated on each run's training CSV and
checked against fp32 on its own held-out CSV, so the drop is a real one; the width comes from the checkpoint.

    .venv/bin/python benchmarks/decoder_widths.py [--slices 64] [--calibration-slices 32] [--train-steps 3]
    .venv/bin/python benchmarks/decoder_widths.py --checkpoints RUN_A/last.ckpt RUN_B/last.ckpt --calibration-slices 128
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import held_out_csvs, machine, prepared_data, print_table, write_results  # noqa: E402
from inference_throughput import timed  # noqa: E402

from gliomaseg.core.defaults import MAX_DICE_DROP, SMP_DECODER_CHANNELS  # noqa: E402
from gliomaseg.data.files import read_image  # noqa: E402
from gliomaseg.export.onnx import export_onnx  # noqa: E402
from gliomaseg.export.quantization import QuantizationError, write_variant  # noqa: E402
from gliomaseg.inference.onnx_backend import OnnxPredictor  # noqa: E402
from gliomaseg.modeling.models import build_model, gflops, parse_decoder_channels  # noqa: E402
from gliomaseg.modeling.precision import BF16, FP32, probe_rates  # noqa: E402
from gliomaseg.modeling.spec import read_checkpoint  # noqa: E402
from gliomaseg.training.task import SegmentationTask  # noqa: E402

WIDTHS = (",".join(map(str, SMP_DECODER_CHANNELS)), "128,64,32,16,8", "64,32,16,16,8")
ENCODER = "timm-tf_efficientnet_lite0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--calibration-slices", type=int, default=32)
    parser.add_argument("--widths", nargs="+", default=list(WIDTHS))
    parser.add_argument("--train-batch", type=int, default=16, help="the recipe's batch")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per precision (0: skip training)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds over all models")
    parser.add_argument("--fp32-only", action="store_true", help="training images/s in fp32 only (bf16 not timed)")
    parser.add_argument("--train-only", action="store_true",
                        help="training images/s alone (e.g. with torch limited to AVX2: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)")
    parser.add_argument("--checkpoints", nargs="+", type=Path, default=None,
                        help="trained runs' checkpoints to time instead of random weights at --widths")
    args = parser.parse_args()
    if args.fp32_only:  # e.g. with torch limited to AVX2, where bf16 is emulated and one step takes a minute
        import gliomaseg.modeling.precision as precision

        precision.cpu_runs_bf16 = lambda: False
    data, source = prepared_data(True)
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-widths-"))
    if args.checkpoints:
        runs = [(ckpt, *held_out_csvs(ckpt)) for ckpt in args.checkpoints]
    else:
        runs = [(_random_weights(width, work), data / "data_train.csv", data / "data_val.csv") for width in args.widths]
    frame = pd.read_csv(runs[0][2])
    images = np.stack([read_image(p) for p in frame["image_path"][: args.slices]])
    rows, predictors = [], {}
    for ckpt, train_csv, val_csv in runs:
        _, info = read_checkpoint(ckpt)
        channels = info.decoder_channels
        width = ",".join(map(str, channels or SMP_DECODER_CHANNELS))  # None: smp's default
        name = f"{len(rows)}-{width.replace(',', '-')}"
        model = build_model(info.arch, info.encoder, encoder_weights=None, decoder_channels=channels)
        row = {"decoder_channels": width, "gflop_per_slice": round(gflops(model, info.image_size), 2),
               "weights": f"trained ({ckpt.parent.parent.name}/{ckpt.parent.name})" if args.checkpoints else "random"}
        if args.train_only:
            _train_columns(row, args, info)
            rows.append(row)
            print(row, flush=True)
            continue
        export_onnx(ckpt, work / f"{name}.onnx")
        try:
            report = write_variant(work / f"{name}.onnx", work / f"{name}.int8.onnx", "int8", check_csv=val_csv,
                                   calibration_csv=train_csv, calibration_slices=args.calibration_slices,
                                   max_dice_drop=MAX_DICE_DROP if args.checkpoints else 1.0, validation_csvs=[val_csv])
            row["int8_check"] = f"passed, mean per-patient Dice drop {report['patient_dice_drop']:.4f}" if args.checkpoints else "n/a"
        except QuantizationError as exc:  # refused by its check: the default path would not run it
            row["int8_check"] = f"refused: {exc}"
        for variant, path in (("fp32", work / f"{name}.onnx"), ("int8", work / f"{name}.int8.onnx")):
            row[f"{variant}_slices_per_s"] = row[f"{variant}_setting"] = None
            if path.is_file():
                predictor = OnnxPredictor(path)
                predictors[(len(rows), variant)] = predictor
                row[f"{variant}_setting"] = f"{predictor.settings.threads} threads, micro-batch {predictor.micro_batch}"
        _train_columns(row, args, info)
        print(row, flush=True)
        rows.append(row)
    # Timed in alternating rounds, every model once a round: on this 2-core machine one model's rate moved by up to
    # 30% from one minute to the next, so models are compared within rounds; each keeps its best round.
    for _ in range(args.rounds):
        for (index, variant), predictor in predictors.items():
            rate, _ = timed(predictor.probabilities, images, 16)  # the network's speed (segment() standardizes first)
            key = f"{variant}_slices_per_s"
            rows[index][key] = max(rows[index][key] or 0.0, round(rate, 1))
            rows[index].setdefault(f"{variant}_rounds", []).append(round(rate, 1))
    print(f"\n{len(images)} held-out slices; data: {source}\nmachine: {machine()}")
    print_table(rows, list(rows[0]))
    write_results("decoder_widths_train" if args.train_only else "decoder_widths", rows, {"slices": len(images), "data": source, "machine": machine(),
                                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


def _train_columns(row: dict, args: argparse.Namespace, info) -> None:
    """Training images/s of the model ``info`` describes (architecture, encoder, size, decoder widths), fp32 and
    bf16-mixed, by the precision probe's own timing."""
    if args.train_steps:
        rates = probe_rates(info.arch, info.encoder, info.image_size, batch=args.train_batch, steps=args.train_steps,
                            decoder_channels=info.decoder_channels)
        row["train_images_per_s_fp32"] = rates[FP32]
        row["train_images_per_s_bf16"] = rates[BF16] or None  # 0: not run (no bf16 instructions)


def _random_weights(width: str, work: Path) -> Path:
    """A checkpoint of the architecture at ``width`` with random weights (seeded by Lightning's default init)."""
    task = SegmentationTask(arch="Unet", encoder=ENCODER, image_size=256, scheduler="none", intensity="patient",
                            decoder_channels=parse_decoder_channels(width))
    path = work / f"random-{width.replace(',', '-')}.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path




if __name__ == "__main__":
    main()
