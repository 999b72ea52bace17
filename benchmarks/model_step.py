"""The model step alone, in the variants that could make it faster, on this machine's CPU.

Unet-resnet18 at 256 px, channels_last, SGD, dice loss, random data: the step that bounds training
throughput (no data loading). Variants: bf16 autocast at batch 16 (what ``--precision auto`` runs here), at
batch 4, 8 and 32, bf16 weights (the whole model in bf16, no autocast) and ``torch.compile`` (Inductor). The
reference runs first and last, so drift shows.

    .venv/bin/python benchmarks/model_step.py [--steps 8] [--variants eager batch8 batch32 bf16-weights compiled eager]
"""
import argparse
import time

import torch

from gliomaseg.modeling.losses import build_loss
from gliomaseg.modeling.models import build_model

VARIANTS = {  # name: (batch, compiled, bf16 weights)
    "eager": (16, False, False),
    "batch4": (4, False, False),
    "batch8": (8, False, False),
    "batch32": (32, False, False),
    "bf16-weights": (16, False, True),
    "compiled": (16, True, False),
}


def run(name: str, steps: int) -> float:
    """Best images/s over ``steps`` timed steps after two warm-up (compiling) steps."""
    batch, compiled, bf16_weights = VARIANTS[name]
    torch.manual_seed(0)
    dtype = torch.bfloat16 if bf16_weights else torch.float32
    images = torch.randn(batch, 3, 256, 256, dtype=dtype).contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(batch, 1, 256, 256) > 0.8).float()
    loss_fn = build_loss("dice")
    model = build_model("unet", "resnet18").train().to(dtype=dtype, memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not bf16_weights):
            loss = loss_fn(forward(images).float(), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    step()
    warmup = time.perf_counter() - started
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    best, median = batch / min(times), batch / sorted(times)[len(times) // 2]
    print(f"{name} (batch {batch}): first 2 steps {warmup:.1f} s; best {best:.2f} images/s, median {median:.2f}", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["eager", "batch8", "batch32", "bf16-weights", "compiled", "eager"])
    args = parser.parse_args()
    for name in args.variants:
        run(name, args.steps)


if __name__ == "__main__":
    main()
