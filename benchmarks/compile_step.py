"""The model step alone, eager against ``torch.compile`` (Inductor), on this machine's CPU.

Unet-resnet18 at 256 px, batch 16, bf16 autocast, channels_last, SGD, dice loss, random data: the step that
bounds training throughput. Eager runs before and after the compiled model, so drift shows.

    .venv/bin/python benchmarks/compile_step.py
"""
import time

import torch

from gliomaseg.losses import build_loss
from gliomaseg.models import build_model

torch.manual_seed(0)
x = torch.randn(16, 3, 256, 256).contiguous(memory_format=torch.channels_last)
y = (torch.rand(16, 1, 256, 256) > 0.8).float()
loss_fn = build_loss("dice")
def run(compiled, steps=8):
    torch.manual_seed(0)
    model = build_model("unet", "resnet18").train().to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(fwd(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    t = time.perf_counter(); step(); step(); first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    print(f"{'compiled' if compiled else 'eager'}: first 2 steps {first:.1f} s; best {16/min(times):.2f} images/s, median {16/sorted(times)[len(times)//2]:.2f}", flush=True)
run(False); run(True); run(False)
