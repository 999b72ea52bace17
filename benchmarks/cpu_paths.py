"""Which numeric path is fastest on this CPU: precision and layout for a training step, batch size for inference.

Random data (no files), Unet-resnet18 at --size (256). Prints two tables and writes benchmarks/results/cpu_paths.json.

    .venv/bin/python benchmarks/cpu_paths.py [--size 256] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

from gliomaseg.modeling.losses import build_loss  # noqa: E402
from gliomaseg.modeling.models import build_model  # noqa: E402


def training_paths(size: int, steps: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(16, 3, size, size)
    y = (torch.rand(16, 1, size, size) > 0.8).float()
    rows = []
    for channels_last in (False, True):
        for mode in ("fp32", "bf16 autocast", "bf16 weights"):
            model = build_model("unet", "resnet18").train()
            inputs = x
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                inputs = x.contiguous(memory_format=torch.channels_last)
            if mode == "bf16 weights":
                model, inputs = model.to(torch.bfloat16), inputs.to(torch.bfloat16)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            loss_fn = build_loss("dice")
            forward = backward = 0.0
            for step in range(steps + 1):
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
                    out = model(inputs)
                t1 = time.perf_counter()
                loss = loss_fn(out.float(), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                t2 = time.perf_counter()
                if step:  # the first step warms up
                    forward += t1 - t0
                    backward += t2 - t1
            rows.append({"layout": "channels_last" if channels_last else "NCHW", "precision": mode,
                         "forward_s": round(forward / steps, 2), "backward_s": round(backward / steps, 2),
                         "images_per_s": round(16 * steps / (forward + backward), 2)})
            print(rows[-1], flush=True)
    return rows


def inference_batches(size: int) -> list[dict]:
    import onnxruntime as ort

    torch.manual_seed(0)
    x = torch.randn(32, 3, size, size)
    nchw = build_model("unet", "resnet18").eval()
    cl = build_model("unet", "resnet18").eval()
    cl.load_state_dict(nchw.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    path = Path(tempfile.mkdtemp()) / "m.onnx"
    torch.onnx.export(nchw, (x[:2],), str(path), input_names=["images"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.trace(cl, x[:4].contiguous(memory_format=torch.channels_last)))
        paths = {
            "eager NCHW": lambda t: nchw(t),
            "eager channels_last": lambda t: cl(t.contiguous(memory_format=torch.channels_last)),
            "TorchScript frozen, channels_last": lambda t: frozen(t.contiguous(memory_format=torch.channels_last)),
            "onnxruntime": lambda t: session.run(None, {"images": t.numpy()}),
        }
        rows = []
        for name, fn in paths.items():
            row = {"path": name}
            for batch in (1, 2, 4, 8, 16):
                fn(x[:batch])
                started = time.perf_counter()
                for i in range(0, len(x), batch):
                    fn(x[i : i + batch])
                row[f"batch_{batch}"] = round(len(x) / (time.perf_counter() - started), 1)
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    train_rows = training_paths(args.size, args.steps)
    infer_rows = inference_batches(args.size)
    print(f"\nUnet-resnet18 at {args.size}x{args.size}; machine: {machine()}")
    print("\ntraining step, batch 16:")
    print_table(train_rows, ["layout", "precision", "forward_s", "backward_s", "images_per_s"])
    print("\ninference, slices/s by batch size (32 slices):")
    print_table(infer_rows, ["path"] + [f"batch_{b}" for b in (1, 2, 4, 8, 16)])
    print(f"wrote {write_results('cpu_paths', {'training': train_rows, 'inference': infer_rows}, {'machine': machine(), **vars(args)})}")


if __name__ == "__main__":
    main()
