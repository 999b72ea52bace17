"""Training and inference throughput on a CUDA GPU, for the models the project ships and compares.

Model rows time the network alone (tensors already on the GPU): a training step (forward, loss,
backward, Adam step) and inference (forward + sigmoid), fp32 (TF32 convolutions, PyTorch's default)
against bf16 autocast, channels_last, at 256 px. The last rows run ``gliomaseg train`` end to end
(Lightning, data loading and augmentation on the CPU workers included) on synthetic slices.

    python benchmarks/gpu_throughput.py [--quick]

Needs a CUDA device; the numbers name it. Results go to benchmarks/results/gpu_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import prepared_data, print_table, write_results  # noqa: E402

from gliomaseg.modeling.losses import build_loss  # noqa: E402
from gliomaseg.modeling.models import build_model  # noqa: E402

MODELS = {"Unet-resnet18": ("unet", "resnet18"), "Unet-lite0 (shipped recipe)": ("unet", "timm-tf_efficientnet_lite0")}


def timed(step, steps: int, warmup: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls, synchronised with the GPU."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def model_rows(size: int, batches: list[int], steps: int, warmup: int) -> list[dict]:
    rows = []
    for label, (arch, encoder) in MODELS.items():
        for batch in batches:
            for bf16 in (False, True):
                torch.manual_seed(0)
                model = build_model(arch, encoder).cuda().to(memory_format=torch.channels_last)
                images = torch.rand(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
                masks = (torch.rand(batch, 1, size, size, device="cuda") > 0.9).float()
                loss_fn = build_loss("dice+bce")
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

                def train_step() -> None:
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                        loss = loss_fn(model(images), masks)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

                @torch.inference_mode()
                def infer_step() -> None:
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                        model(images).sigmoid()

                model.train()
                train_s = timed(train_step, steps, warmup)
                model.eval()
                infer_s = timed(infer_step, steps, warmup)
                rows.append({"model": label, "batch": batch, "precision": "bf16 autocast" if bf16 else "fp32 (TF32)",
                             "train_images_per_s": round(batch / train_s, 1), "inference_slices_per_s": round(batch / infer_s, 1)})
                del model, optimizer
                torch.cuda.empty_cache()
    return rows


def lightning_rows(size: int, workers: int, epochs: int) -> list[dict]:
    """Images/s through ``gliomaseg train`` on the GPU (first epoch's start-up included)."""
    from gliomaseg.training.config import TrainConfig
    from gliomaseg.training.run import train

    data, source = prepared_data(use_real=False)
    rows = []
    for precision in ("32", "bf16-mixed"):
        out = Path(tempfile.mkdtemp(prefix="gliomaseg-gpu-run-"))
        result = train(TrainConfig(out=str(out), data=str(data), epochs=epochs, batch_size=16, image_size=size, workers=workers,
                                   progress=False, precision=precision, accelerator="gpu"))
        rows.append({"model": f"gliomaseg train, Unet-resnet18, {source}", "batch": 16, "precision": precision,
                     "train_images_per_s": round(result.summary["train_images_per_second"], 1), "inference_slices_per_s": ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8, help="data loader workers for the gliomaseg train rows")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the gliomaseg train rows")
    parser.add_argument("--quick", action="store_true", help="a few steps, batch 16 only: checks that the benchmark runs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py needs a CUDA device; torch sees none")
    if args.quick:
        args.batches, args.steps, args.warmup, args.epochs = [16], 3, 1, 1
    gpu = torch.cuda.get_device_name()
    print(f"device: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    torch.backends.cudnn.benchmark = True
    rows = model_rows(args.size, args.batches, args.steps, args.warmup) + lightning_rows(args.size, args.workers, args.epochs)
    print_table(rows, ["model", "batch", "precision", "train_images_per_s", "inference_slices_per_s"])
    path = write_results("gpu_throughput", rows, {"device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
                                                  "size": args.size, "steps": args.steps, "warmup": args.warmup})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
