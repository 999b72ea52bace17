"""Inference throughput of Unet-resnet18 at 256x256, and seconds per patient end to end.

Paths: PyTorch eager fp32 at batch 1 (the case study's way), eager batched fp32 NCHW, eager batched
with channels_last, bf16 autocast, and ONNX Runtime. Masks of every path are compared with the
fp32 eager masks (pixel agreement). The model is randomly initialised unless --checkpoint is given:
speed does not depend on the weights, agreement is more telling with a trained model.

    .venv/bin/python benchmarks/inference_throughput.py [--checkpoint runs/x/best.ckpt] [--slices 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, prepared_data, print_table, write_results  # noqa: E402

from gliomaseg.data.files import read_image  # noqa: E402
from gliomaseg.inference.predict import predict  # noqa: E402
from gliomaseg.inference.predictor import ModelInfo, TorchPredictor, load_checkpoint  # noqa: E402
from gliomaseg.models import build_model  # noqa: E402


def timed(fn, images: np.ndarray, batch: int, repeats: int = 1) -> tuple[float, np.ndarray]:
    fn(images[:batch])  # warm-up
    out = []
    started = time.perf_counter()
    for _ in range(repeats):
        out = [fn(images[i : i + batch]) for i in range(0, len(images), batch)]
    seconds = (time.perf_counter() - started) / repeats
    return len(images) / seconds, np.concatenate(out)


def checkpoint_for_bench(path: str | None, work: Path) -> Path:
    """A real checkpoint: the one given, else a freshly initialised Unet-resnet18 at 256 saved like training does."""
    if path:
        return Path(path)
    from gliomaseg.training import SegmentationTask

    task = SegmentationTask(arch="Unet", encoder="resnet18", image_size=256, scheduler="none")
    ckpt = work / "bench.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    import pandas as pd

    data, source = prepared_data(not args.synthetic)
    frame = pd.read_csv(data / "data_val.csv")
    images = np.stack([read_image(p) for p in frame["image_path"][: args.slices]])
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-inf-"))
    ckpt = checkpoint_for_bench(args.checkpoint, work)
    fp32_nchw = load_checkpoint(ckpt, channels_last=False)
    fp32_cl = load_checkpoint(ckpt, channels_last=True)
    bf16_cl = load_checkpoint(ckpt, channels_last=True, precision="bf16")
    from gliomaseg.export import export_onnx
    from gliomaseg.inference.runtime import OnnxPredictor

    export_onnx(ckpt, work / "model.onnx")
    onnx = OnnxPredictor(work / "model.onnx")
    paths = [
        ("eager fp32, batch 1 (case study)", fp32_nchw.probabilities, 1),
        (f"eager fp32 NCHW, batch {args.batch} (micro-batches of 2)", fp32_nchw.probabilities, args.batch),
        (f"eager fp32 channels_last, batch {args.batch} (micro-batches of 2)", fp32_cl.probabilities, args.batch),
        (f"eager bf16 channels_last, batch {args.batch} (micro-batches of 2)", bf16_cl.probabilities, args.batch),
        (f"onnxruntime fp32, batch {args.batch} (micro-batches of 4)", onnx.probabilities, args.batch),
    ]
    rows, reference = [], None
    for label, fn, batch in paths:
        rate, probs = timed(fn, images, batch)
        masks = probs > 0.5
        reference = masks if reference is None else reference
        rows.append({"path": label, "slices_per_s": round(rate, 2), "mask_agreement_vs_fp32": f"{(masks == reference).mean():.5f}"})
        print(f"{label}: {rate:.2f} slices/s", flush=True)
    fastest = max(paths[1:], key=lambda p: next(r["slices_per_s"] for r in rows if r["path"] == p[0]))
    patient = frame["patient"].value_counts().index[0]
    patient_csv = work / "patient.csv"
    frame[frame["patient"] == patient].to_csv(patient_csv, index=False)
    n = int((frame["patient"] == patient).sum())
    for label, predictor in (("end to end per patient, eager fp32 channels_last", fp32_cl), ("end to end per patient, onnxruntime", onnx)):
        started = time.perf_counter()
        predict(predictor, patient_csv, work / "e2e" / label[-8:].strip(), batch_size=args.batch)
        seconds = time.perf_counter() - started
        rows.append({"path": f"{label} ({n} slices: read, predict, masks, overlays, GIF)", "seconds_per_patient": round(seconds, 2),
                     "slices_per_s": round(n / seconds, 2)})
    print()
    print(f"Unet-resnet18 at 256x256 on {len(images)} slices; data: {source}; checkpoint: {'given' if args.checkpoint else 'random init'}")
    print(f"machine: {machine()}; fastest batched path: {fastest[0]}")
    print_table(rows, ["path", "slices_per_s", "mask_agreement_vs_fp32", "seconds_per_patient"])
    print(f"wrote {write_results('inference_throughput', rows, {'data': source, 'machine': machine(), **vars(args)})}")


if __name__ == "__main__":
    main()
