"""Would PyTorch beat ONNX Runtime at inference on this CPU? The paths a checkpoint could run, timed in turn.

On a CPU with bf16 instructions (AVX512_BF16, AMX) a bf16 PyTorch model might match or beat ORT int8. This times,
alternating rounds so that other load hits all alike, on held-out slices of the run at the model's size
(standardized as it was trained): ORT fp32 and int8 (the
exported and quantized checkpoint, threads and micro-batch by ``predict``'s probe), PyTorch eager fp32 (what
``predict --checkpoint`` runs), PyTorch eager with bf16 weights and inputs (``--precision bf16``) and, with ``--frozen``,
a TorchScript trace frozen under bf16 autocast (``torch.jit.freeze``: oneDNN's fused, pre-packed kernels; deprecated
in torch 2.14, measured only to know what it is worth). Also the mask agreement of each path with PyTorch fp32.

    .venv/bin/python benchmarks/torch_paths.py --checkpoint RUN/last.ckpt [--slices 32] [--rounds 3] [--bf16-batches 2 4 8 16] [--frozen]
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
from _common import alternating_rates, held_out_csvs, machine, print_table, write_results  # noqa: E402

from gliomaseg.export.onnx import export_onnx  # noqa: E402
from gliomaseg.export.quantization import QuantizationError, load_slices, write_variant  # noqa: E402
from gliomaseg.inference.onnx_backend import OnnxPredictor  # noqa: E402
from gliomaseg.inference.torch_backend import load_checkpoint  # noqa: E402
from gliomaseg.modeling.spec import read_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained run's checkpoint (its config.json names its CSVs)")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration-slices", type=int, default=128)
    parser.add_argument("--bf16-batches", type=int, nargs="+", default=[2, 4, 8, 16], help="micro-batches for bf16 weights")
    parser.add_argument("--bf16-batch", type=int, default=8, help="the frozen trace's batch")
    parser.add_argument("--frozen", action="store_true", help="also time a frozen TorchScript trace under bf16 autocast")
    args = parser.parse_args()
    train_csv, val_csv = held_out_csvs(args.checkpoint)
    _, info = read_checkpoint(args.checkpoint)
    # held-out slices drawn at random, standardized as the model expects (per patient when it was trained so)
    images = load_slices(val_csv, info.image_size, limit=args.slices, intensity=info.intensity).images
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-torch-"))
    export_onnx(args.checkpoint, work / "model.onnx")
    paths = {"ORT fp32": OnnxPredictor(work / "model.onnx").logits}
    try:
        write_variant(work / "model.onnx", work / "model.int8.onnx", "int8", check_csv=val_csv,
                      calibration_csv=train_csv, calibration_slices=args.calibration_slices)
        paths["ORT int8"] = OnnxPredictor(work / "model.int8.onnx").logits
    except QuantizationError as exc:
        print(f"int8 refused by its check: {exc}")
    fp32 = load_checkpoint(args.checkpoint)
    paths["torch eager fp32 (predict --checkpoint)"] = lambda x: fp32.logits(x).numpy()
    for batch in args.bf16_batches:  # bf16 weights and inputs on CPU, at each micro-batch
        bf16 = load_checkpoint(args.checkpoint, precision="bf16")
        bf16.micro_batch = batch
        paths[f"torch eager bf16 weights (--precision bf16), micro-batch {batch}"] = lambda x, p=bf16: p.logits(x).numpy()

    def inputs(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
        return ((t - fp32.mean) / fp32.std).contiguous(memory_format=torch.channels_last)

    if args.frozen:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            frozen = torch.jit.freeze(torch.jit.trace(fp32.model, inputs(images[: args.bf16_batch])))

        def frozen_bf16(x: np.ndarray) -> np.ndarray:
            step = args.bf16_batch
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return torch.cat([frozen(inputs(x[i : i + step])).float() for i in range(0, len(x), step)]).numpy()

        paths[f"TorchScript frozen, bf16 autocast, batch {args.bf16_batch}"] = frozen_bf16
    reference = paths["torch eager fp32 (predict --checkpoint)"](images)[:, 0] > 0
    agreement = {}
    for name, run in paths.items():
        agreement[name] = float(((run(images)[:, 0] > 0) == reference).mean())  # warm-up, and its masks
    rates = alternating_rates({name: (lambda r=run: r(images)) for name, run in paths.items()}, len(images), args.rounds)
    rows = [{"path": name, "slices_per_s_best": max(r), "rounds": " ".join(f"{v:.1f}" for v in r),
             "mask_agreement_with_torch_fp32": round(agreement[name], 6)} for name, r in rates.items()]
    print(f"\n{len(images)} slices of {val_csv.name}; {args.checkpoint}\nmachine: {machine()}")
    print_table(rows, list(rows[0]))
    write_results("torch_paths", rows, {"checkpoint": str(args.checkpoint), "slices": len(images), "machine": machine(),
                                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


if __name__ == "__main__":
    main()
