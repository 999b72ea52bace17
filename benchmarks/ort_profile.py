"""Where ONNX Runtime spends an ONNX model's time, by operator type, and whether rewriting the Unet decoder's nearest
2x upsampling (a ``Resize``) into other operators makes the int8 graph faster.

For each model: ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) over ``--runs`` timed batches of
``--batch`` random 256 px inputs at 2 threads, each node's kernel time summed by operator type, and the slowest
nodes with their input shapes. ``--rewrite`` also times, for each model, copies whose Resize nodes are replaced by
``d2s`` (a Concat of four copies + DepthToSpace) or ``expand`` (Unsqueeze + Expand + Reshape); give it fp32 models,
with ``--calibration-csv`` to quantize each copy to int8 as ``gliomaseg export --quantize int8`` does. Each rewrite
is checked to give the original's logits (max abs difference printed). All models are timed in alternating rounds.

    .venv/bin/python benchmarks/ort_profile.py model.onnx model.int8.onnx
    .venv/bin/python benchmarks/ort_profile.py model.onnx --rewrite d2s expand --calibration-csv data/data_train.csv
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

EXACT_NEAREST = {(b"asymmetric", b"floor"), (b"half_pixel", b"round_prefer_floor")}


def rewrite_upsampling(src: Path, dst: Path, how: str) -> int:
    """Copy ``src`` to ``dst`` with every exact-2x nearest Resize replaced (``how``: ``d2s`` or ``expand``); returns
    how many were replaced. A Resize whose output is not twice its input (by shape inference) is left alone."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(src))
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    nodes, extra, replaced = [], [], 0
    for node in model.graph.node:
        if node.op_type != "Resize":
            nodes.append(node)
            continue
        modes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, y = node.input[0], node.output[0]
        src_shape, dst_shape = shapes.get(x), shapes.get(y)
        # Pixel duplication only for the sampling rules where output x reads input x // 2: torch's export
        # (asymmetric, floor) and ONNX's defaults (half_pixel, round_prefer_floor); e.g. ceil is not.
        rule = (modes.get("coordinate_transformation_mode", b"half_pixel"), modes.get("nearest_mode", b"round_prefer_floor"))
        exact = (modes.get("mode", b"nearest") == b"nearest" and rule in EXACT_NEAREST and src_shape and dst_shape
                 and None not in src_shape[1:] and dst_shape[2:] == [2 * src_shape[2], 2 * src_shape[3]])
        if not exact:
            nodes.append(node)
            continue
        replaced += 1
        _, channels, height, width = src_shape
        tag = node.name.replace("/", "_") or f"resize{replaced}"
        if how == "d2s":  # DCR order: output[c, 2h+i, 2w+j] = input[(2i+j)*C + c, h, w] = x[c, h, w]
            nodes += [helper.make_node("Concat", [x] * 4, [tag + "_tiled"], axis=1, name=tag + "_tile"),
                      helper.make_node("DepthToSpace", [tag + "_tiled"], [y], blocksize=2, mode="DCR", name=tag + "_d2s")]
        else:
            consts = {"axes": [3, 5], "reps": [1, 1, 1, 2, 1, 2], "shape": [-1, channels, 2 * height, 2 * width]}
            extra += [numpy_helper.from_array(np.array(v, np.int64), f"{tag}_{k}") for k, v in consts.items()]
            nodes += [helper.make_node("Unsqueeze", [x, f"{tag}_axes"], [tag + "_u"], name=tag + "_unsqueeze"),
                      helper.make_node("Expand", [tag + "_u", f"{tag}_reps"], [tag + "_e"], name=tag + "_expand"),
                      helper.make_node("Reshape", [tag + "_e", f"{tag}_shape"], [y], name=tag + "_reshape")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(extra)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return replaced


def session(path: Path, profile: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="gliomaseg-ort-profile-")) / path.stem)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profile(path: Path, inputs: np.ndarray, runs: int) -> tuple[dict[str, float], list[tuple[str, float, str]]]:
    """Share of kernel time by operator type, and the 5 slowest nodes (name, ms per call, input type and shape)."""
    sess = session(path, profile=True)
    name = sess.get_inputs()[0].name
    for _ in range(2 + runs):
        sess.run(None, {name: inputs})
    events = json.loads(Path(sess.end_profiling()).read_text())
    by_type, by_node = collections.Counter(), collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_type[event["args"]["op_name"]] += event["dur"]
            by_node[event["name"][: -len("_kernel_time")]].append((event["dur"], event["args"].get("input_type_shape", [{}])[0]))
    total = sum(by_type.values()) or 1
    slowest = sorted(by_node.items(), key=lambda kv: -sum(d for d, _ in kv[1]))[:5]
    return ({op: 100 * t / total for op, t in by_type.most_common(8)},
            [(node, sum(d for d, _ in calls) / len(calls) / 1000, json.dumps(calls[0][1])) for node, calls in slowest])


def rate(path: Path, inputs: np.ndarray, runs: int) -> float:
    sess = session(path)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: inputs})
    started = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: inputs})
    return runs * len(inputs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (profiling off)")
    parser.add_argument("--rewrite", nargs="*", choices=("d2s", "expand"), default=[])
    parser.add_argument("--calibration-csv", type=Path, default=None, help="quantize each rewritten copy to int8 on these slices")
    parser.add_argument("--calibration-slices", type=int, default=64)
    args = parser.parse_args()
    print(machine())
    inputs = np.random.default_rng(0).standard_normal((args.batch, 3, 256, 256)).astype(np.float32)
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-ort-rewrite-"))
    models = {m.name: m for m in args.models}
    if args.rewrite and args.calibration_csv:
        from gliomaseg.export.quantization import load_slices, quantize_int8
        from gliomaseg.modeling.spec import read_onnx_metadata
    for original in args.models:
        for how in args.rewrite:
            copy = work / f"{original.stem}.{how}.onnx"
            print(f"{copy.name}: {rewrite_upsampling(original, copy, how)} Resize node(s) replaced")
            models[copy.name] = copy
        if args.rewrite and args.calibration_csv:
            meta = read_onnx_metadata(original) or {}
            calibration = load_slices(args.calibration_csv, int(meta.get("image_size", 256)), limit=args.calibration_slices,
                                      intensity=meta.get("intensity", "none")).images
            for name in [original.name] + [f"{original.stem}.{how}.onnx" for how in args.rewrite]:
                quantized = work / (Path(name).stem + ".int8.onnx")
                quantize_int8(models[name], quantized, calibration)
                models[quantized.name] = quantized
    reference = {}
    for name, path in models.items():
        out = session(path).run(None, {session(path).get_inputs()[0].name: inputs})[0]
        base = name.replace(".d2s", "").replace(".expand", "")
        if base in reference:
            print(f"{name}: max abs logit difference against {base}: {np.abs(out - reference[base]).max():.3g}")
        else:
            reference[name] = out
    for name, path in models.items():
        shares, slowest = profile(path, inputs, args.runs)
        print(f"\n{name} (profiled, batch {args.batch}): " + ", ".join(f"{op} {share:.1f}%" for op, share in shares.items()))
        for node, ms, shape in slowest:
            print(f"    {ms:7.2f} ms/call  {node}  {shape}")
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, path in models.items():
            best[name] = max(best.get(name, 0.0), rate(path, inputs, args.runs))
    print("\nslices/s, 2 threads, best of", args.rounds, "alternating rounds:")
    for name, value in best.items():
        print(f"  {name:40s} {value:6.1f}")


if __name__ == "__main__":
    main()
