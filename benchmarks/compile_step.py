"""The model step alone, eager against ``torch.compile`` (Inductor), on this machine's CPU.

Unet-resnet18 at 256 px, batch 16, bf16 autocast, channels_last, SGD, dice loss, random data: the step that
bounds training throughput. Eager runs before and after the compiled model, so drift shows.

    .venv/bin/python benchmarks/compile_step.py
"""
import argparse
import time

import torch

from gliomaseg.losses import build_loss
from gliomaseg.models import build_model


def run(compiled: bool, steps: int) -> float:
    """Best images/s over ``steps`` timed steps after two warm-up (compiling) steps."""
    torch.manual_seed(0)
    images = torch.randn(16, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(16, 1, 256, 256) > 0.8).float()
    loss_fn = build_loss("dice")
    model = build_model("unet", "resnet18").train().to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(forward(images), masks)
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
    best, median = len(images) / min(times), len(images) / sorted(times)[len(times) // 2]
    print(f"{'compiled' if compiled else 'eager'}: first 2 steps {warmup:.1f} s; best {best:.2f} images/s, median {median:.2f}", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    for compiled in (False, True, False):
        run(compiled, args.steps)


if __name__ == "__main__":
    main()
