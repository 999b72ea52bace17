"""Bounded load check of `gliomaseg serve` on loopback: N concurrent uploads of one slice, all answered?

The viewer runs in this process (uvicorn on 127.0.0.1, a free port) with an ONNX model, as `serve` does by
default: the model given, else a freshly initialised Unet-resnet18 exported at --image-size (speed does not
depend on the weights). First --sequential uploads one after the other (latency of one request alone), then
--concurrent uploads at once. Every answer must be 200 with the same mask; the run stops by itself
(fixed request count, 120 s timeout per request). Sends traffic to 127.0.0.1 only.

    .venv/bin/python benchmarks/serve_load.py [--model model.onnx] [--image-size 128 256] [--concurrent 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import REAL_DATA, machine, print_table, write_results  # noqa: E402
from serve_helpers import live_server, multipart, request  # noqa: E402

from gliomaseg.inference.backend import open_predictor  # noqa: E402
from gliomaseg.serve.app import create_app  # noqa: E402

TIMEOUT_S = 120


def onnx_for_bench(image_size: int, work: Path) -> Path:
    from gliomaseg.export.onnx import export_onnx
    from gliomaseg.training.task import SegmentationTask

    task = SegmentationTask(arch="Unet", encoder="resnet18", image_size=image_size, scheduler="none")
    ckpt = work / f"bench{image_size}.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    return Path(export_onnx(ckpt, work / f"bench{image_size}.onnx")["path"])


def a_slice(work: Path) -> tuple[Path, str]:
    slices = sorted(REAL_DATA.glob("*/*_[0-9]*.tif")) if REAL_DATA.is_dir() else []
    slices = [p for p in slices if not p.stem.endswith("_mask")]
    if slices:
        return slices[len(slices) // 2], "a real kaggle_3m slice (256x256)"
    from gliomaseg.data.synth import generate

    generate(work / "synth", patients=1, slices=4, seed=0)
    return sorted((work / "synth").glob("*/*_2.tif"))[0], "a synthetic slice (256x256)"


def post(base: str, body: bytes, content_type: str) -> tuple[int, float, dict]:
    started = time.perf_counter()
    status, _, raw = request(f"{base}/api/segment", body, {"Content-Type": content_type}, timeout=TIMEOUT_S)
    return status, time.perf_counter() - started, json.loads(raw)


def run(model: Path, label: str, image: Path, sequential: int, concurrent: int) -> list[dict]:
    predictor = open_predictor(model=model)
    body, content_type = multipart([(image.name, image.read_bytes())])
    rows = []
    with live_server(create_app(predictor, model_label=label)) as base:
        post(base, body, content_type)  # warm-up
        alone = [post(base, body, content_type) for _ in range(sequential)]
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrent) as pool:
            together = list(pool.map(lambda _: post(base, body, content_type), range(concurrent)))
        wall = time.perf_counter() - started
    for name, results, seconds in (("one at a time", alone, sum(r[1] for r in alone)), (f"{concurrent} at once", together, wall)):
        latencies = sorted(r[1] for r in results)
        ok = [r for r in results if r[0] == 200]
        masks = {r[2]["cases"][0]["summary"]["tumour_volume_voxels"] for r in ok}
        rows.append({
            "model": label, "requests": name, "answered_200": f"{len(ok)}/{len(results)}",
            "distinct_ids": len({r[2]["id"] for r in ok}), "same_mask": len(masks) == 1,
            "latency_median_s": round(statistics.median(latencies), 3),
            "latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
            "latency_max_s": round(latencies[-1], 3), "wall_s": round(seconds, 2),
            "slices_per_s": round(len(results) / seconds, 2),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="an exported model.onnx (default: untrained Unet-resnet18)")
    parser.add_argument("--image-size", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--sequential", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-serve-"))
    image, source = a_slice(work)
    models = [(args.model, args.model.name)] if args.model else [(onnx_for_bench(s, work), f"Unet-resnet18 ONNX {s}px") for s in args.image_size]
    rows = [row for model, label in models for row in run(model, label, image, args.sequential, args.concurrent)]
    print_table(rows, list(rows[0]))
    meta = {"machine": machine(), "input": source, "server": "uvicorn on 127.0.0.1, one inference at a time"}
    print(f"wrote {write_results('serve_load', rows, meta)}")


if __name__ == "__main__":
    main()
