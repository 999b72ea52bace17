"""Speed of the shipped architecture (Unet + EfficientNet-Lite0, 256 px) at lighter decoder widths: the speed half of
the Dice-vs-slices/s frontier (the Dice half needs the cross-validation, docs/results/).

For each ``--decoder-channels`` setting: GFLOP per slice, ONNX Runtime fp32 and int8 slices/s at 2 threads (threads and
micro-batch chosen by the same probe as ``predict``), on real validation slices, and training images/s (batch
``--train-batch``, fp32 and bf16-mixed where the CPU has bf16, by the precision probe's own timing: forward, dice loss,
backward, optimizer step, channels_last; the fastest of ``--train-steps`` steps). Random weights: speed does not
depend on them; the int8 check's Dice is not meaningful here (its bound is lifted), only its speed.

    .venv/bin/python benchmarks/decoder_widths.py [--slices 64] [--calibration-slices 32] [--train-steps 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, prepared_data, print_table, write_results  # noqa: E402
from inference_throughput import timed  # noqa: E402

from gliomaseg.data.files import read_image  # noqa: E402
from gliomaseg.export.onnx import export_onnx  # noqa: E402
from gliomaseg.export.quantization import write_variant  # noqa: E402
from gliomaseg.inference.onnx_backend import OnnxPredictor  # noqa: E402
from gliomaseg.modeling.models import gflops, parse_decoder_channels  # noqa: E402
from gliomaseg.modeling.precision import BF16, FP32, probe_rates  # noqa: E402
from gliomaseg.training.task import SegmentationTask  # noqa: E402

WIDTHS = ("256,128,64,32,16", "128,64,32,16,8", "64,32,16,16,8")
ENCODER = "timm-tf_efficientnet_lite0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--calibration-slices", type=int, default=32)
    parser.add_argument("--widths", nargs="+", default=list(WIDTHS))
    parser.add_argument("--train-batch", type=int, default=16, help="the recipe's batch")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per precision (0: skip training)")
    args = parser.parse_args()
    data, source = prepared_data(True)
    frame = pd.read_csv(data / "data_val.csv")
    images = np.stack([read_image(p) for p in frame["image_path"][: args.slices]])
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-widths-"))
    rows = []
    for width in args.widths:
        channels = parse_decoder_channels(width)
        task = SegmentationTask(arch="Unet", encoder=ENCODER, image_size=256, scheduler="none", intensity="patient",
                                decoder_channels=channels)
        name = width.replace(",", "-")
        ckpt = work / f"{name}.ckpt"
        torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
        export_onnx(ckpt, work / f"{name}.onnx")
        write_variant(work / f"{name}.onnx", work / f"{name}.int8.onnx", "int8", check_csv=data / "data_val.csv",
                      calibration_csv=data / "data_train.csv", calibration_slices=args.calibration_slices, max_dice_drop=1.0,
                      validation_csvs=[data / "data_val.csv"])
        row = {"decoder_channels": width, "gflop_per_slice": round(gflops(task.model, 256), 2)}
        for variant, path in (("fp32", work / f"{name}.onnx"), ("int8", work / f"{name}.int8.onnx")):
            predictor = OnnxPredictor(path)
            rate, _ = timed(predictor.probabilities, images, 16)  # the network's speed (segment() standardizes first)
            row[f"{variant}_slices_per_s"] = round(rate, 1)
            row[f"{variant}_setting"] = f"{predictor.settings.threads} threads, micro-batch {predictor.micro_batch}"
        if args.train_steps:
            rates = probe_rates("Unet", ENCODER, 256, batch=args.train_batch, steps=args.train_steps, decoder_channels=channels)
            row["train_images_per_s_fp32"] = rates[FP32]
            row["train_images_per_s_bf16"] = rates[BF16] or None  # 0: not run (no bf16 instructions)
        print(row, flush=True)
        rows.append(row)
    print(f"\n{len(images)} validation slices; data: {source}\nmachine: {machine()}")
    print_table(rows, list(rows[0]))
    write_results("decoder_widths", rows, {"slices": len(images), "data": source})


if __name__ == "__main__":
    main()
