"""What denormal weights cost ONNX Runtime: an ONNX model as stored against the same model with them flushed to zero.

Both sessions are plain ONNX Runtime (2 threads, same options), fed the same normalized slices of `data_val.csv` (held out for a fold model; training data of the shipped
model, which trained on all 65 patients) in
micro-batches of 2, timed in alternating rounds; the flushed copy is what ``gliomaseg`` runs
(:mod:`gliomaseg.modeling.denormals`). Also the largest logit difference between the two (0 when flushing changes
nothing that matters). The shipped fp32 model, exported before the flush existed, holds 1579 denormal weights.

    .venv/bin/python benchmarks/denormals.py [--model src/gliomaseg/assets/gliomaseg-default.onnx] [--slices 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternating_rates, machine, prepared_data, print_table, write_results  # noqa: E402

from gliomaseg.assets import shipped_model_path  # noqa: E402
from gliomaseg.export.quantization import load_slices  # noqa: E402
from gliomaseg.modeling.denormals import flush_onnx  # noqa: E402
from gliomaseg.modeling.spec import ModelInfo, read_onnx_metadata  # noqa: E402


def main() -> None:
    import onnx
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="an fp32 ONNX model (default: the shipped one)")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = args.model or shipped_model_path()
    info = ModelInfo.from_dict(read_onnx_metadata(path), path)
    data, source = prepared_data(True)
    images = load_slices(data / "data_val.csv", info.image_size, limit=args.slices, intensity=info.intensity).images
    x = info.normalize(images)
    model = onnx.load(str(path))
    flushed = flush_onnx(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    sessions = {"as stored": ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                "denormals flushed (what gliomaseg runs)": ort.InferenceSession(model.SerializeToString(), options,
                                                                                providers=["CPUExecutionProvider"])}
    outputs = {name: s.run(None, {"images": x[:4]})[0] for name, s in sessions.items()}
    difference = float(np.abs(np.subtract(*outputs.values())).max())
    def run(session) -> None:
        for i in range(0, len(x), 2):
            session.run(None, {"images": x[i : i + 2]})

    rates = alternating_rates({name: (lambda s=session: run(s)) for name, session in sessions.items()}, len(x), args.rounds)
    rows = [{"model": name, "slices_per_s_best": max(r), "rounds": " ".join(map(str, r))} for name, r in rates.items()]
    print(f"\n{path.name}: {flushed} denormal weights; max abs logit difference {difference:.2e}; "
          f"{len(x)} slices, data: {source}\nmachine: {machine()}")
    print_table(rows, list(rows[0]))
    write_results("denormals", rows, {"model": path.name, "denormal_weights": flushed, "max_abs_logit_difference": difference,
                                      "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


if __name__ == "__main__":
    main()
