"""Where ONNX Runtime spends an ONNX model's time, by operator type, and whether rewriting the Unet decoder's nearest
2x upsampling (a ``Resize``) into other operators makes the int8 graph faster.

For each model: ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) over ``--runs`` timed batches of
``--batch`` random 256 px inputs at 2 threads, each node's kernel time summed by operator type, and the slowest
nodes with their input shapes. ``--rewrite`` also times, for each model, copies whose Resize nodes are replaced by
``d2s`` (a Concat of four copies + DepthToSpace) or ``expand`` (Unsqueeze + Expand + Reshape), or, with
``subpixel``, whose Resize and the 3x3 convolution after it become one transposed convolution (the Resize's input
never upsampled); give it fp32 models,
with ``--calibration-csv`` to quantize each copy to int8 as ``gliomaseg export --quantize int8`` does. Each rewrite
is checked to give the original's logits (max abs difference printed). All models are timed in alternating rounds.

    .venv/bin/python benchmarks/ort_profile.py model.onnx model.int8.onnx
    .venv/bin/python benchmarks/ort_profile.py model.onnx --rewrite d2s expand subpixel --calibration-csv data/data_train.csv
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

REWRITES = ("d2s", "expand", "subpixel")
EXACT_NEAREST = {(b"asymmetric", b"floor"), (b"half_pixel", b"round_prefer_floor")}


def _load(src: Path):
    """The model, each tensor's inferred shape (None for an unknown dimension) and its initializers as arrays."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(src))
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    return model, shapes, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _save(model, nodes: list, extra: list, dst: Path) -> None:
    """``model`` with ``nodes`` for its graph and ``extra`` initializers added, checked, written to ``dst``."""
    import onnx

    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(extra)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def exact_2x(node, shapes: dict, weights: dict) -> bool:
    """Whether a Resize node duplicates each pixel 2x2: nearest, a sampling rule where output x reads input x // 2
    (torch's export: asymmetric, floor; ONNX's defaults: half_pixel, round_prefer_floor; not e.g. ceil), an output
    twice its input by shape inference, and, where scales are given, scales of exactly 2 (a scale of 2.0000001
    infers the same shape but reads input x // 2 - 1 at some x)."""
    from onnx import helper

    modes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    rule = (modes.get("coordinate_transformation_mode", b"half_pixel"), modes.get("nearest_mode", b"round_prefer_floor"))
    src_shape, dst_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not (modes.get("mode", b"nearest") == b"nearest" and rule in EXACT_NEAREST and src_shape and dst_shape
            and None not in src_shape[1:] and len(src_shape) == 4 and dst_shape[2:] == [2 * src_shape[2], 2 * src_shape[3]]):
        return False
    scales = node.input[2] if len(node.input) > 2 else ""
    if scales:  # sizes alone make the scale output / input, exactly 2 here
        return scales in weights and weights[scales].tolist() == [1.0, 1.0, 2.0, 2.0]
    return True


def rewrite_upsampling(src: Path, dst: Path, how: str) -> int:
    """Copy ``src`` to ``dst`` with every exact-2x nearest Resize replaced (``how``: ``d2s`` or ``expand``); returns
    how many were replaced. A Resize whose output is not twice its input (by shape inference) is left alone."""
    from onnx import helper, numpy_helper

    model, shapes, weights = _load(src)
    nodes, extra, replaced = [], [], 0
    for node in model.graph.node:
        if node.op_type != "Resize":
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        src_shape = shapes.get(x)
        if not exact_2x(node, shapes, weights):
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
    _save(model, nodes, extra, dst)
    return replaced


# Nearest 2x then a 3x3 convolution (padding 1) reads, along each axis, input pixels i-1 and i for an even output
# pixel and i and i+1 for an odd one: the same as a 4-tap transposed convolution of stride 2 (padding 1) on the
# input itself, with taps (w[2], w[1] + w[2], w[0] + w[1], w[0]): 2.25x fewer multiply-adds for the upsampled
# input's channels (a skip connection's cost the same), and no Resize.
SUBPIXEL_TAPS = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], np.float32)


def rewrite_subpixel(src: Path, dst: Path) -> int:
    """Copy ``src`` to ``dst`` with each exact-2x nearest Resize and the 3x3 Conv after it (directly, or through a
    Concat with a skip connection) replaced by a ConvTranspose on the Resize's input (plus, for a Concat, a Conv on
    the skip and an Add). Exact in real arithmetic; returns how many were replaced."""
    import onnx
    from onnx import helper, numpy_helper

    model, shapes, weights = _load(src)
    users: dict[str, list] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            users[name].append(node)

    outputs = {o.name for o in model.graph.output}
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise ValueError(f"{src}: has subgraphs (If, Loop, Scan), whose reads this rewrite does not follow")

    def only_user(name: str):
        """The one node reading ``name``; None where it is read twice or is a graph output."""
        return users[name][0] if len(users[name]) == 1 and name not in outputs else None

    def plain_3x3(node) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return (node.op_type == "Conv" and list(attrs.get("kernel_shape", [])) == [3, 3] and list(attrs.get("pads", [0] * 4)) == [1] * 4
                and list(attrs.get("strides", [1, 1])) == [1, 1] and list(attrs.get("dilations", [1, 1])) == [1, 1]
                and attrs.get("group", 1) == 1 and node.input[1] in weights)

    drop, add, extra, replaced = set(), {}, [], 0
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        x, y = node.input[0], node.output[0]
        src_shape = shapes.get(x)
        if not exact_2x(node, shapes, weights):
            continue
        concat = only_user(y)
        skip = None
        if (concat is not None and concat.op_type == "Concat" and len(concat.input) == 2 and concat.input[0] == y
                and helper.get_attribute_value(concat.attribute[0]) in (1, -3)):
            conv, skip = only_user(concat.output[0]), concat.input[1]
        else:
            conv, concat = concat, None
        if conv is None or not plain_3x3(conv):
            continue
        w = weights[conv.input[1]]
        bias = len(conv.input) > 2 and conv.input[2] != ""  # passed on by name: it may be an initializer or not
        up = w[:, : src_shape[1]]
        taps = np.einsum("ik,ockl,jl->coij", SUBPIXEL_TAPS, up, SUBPIXEL_TAPS).astype(np.float32)
        replaced += 1
        tag = (node.name.replace("/", "_") or f"resize{replaced}") + "_subpixel"
        extra.append(numpy_helper.from_array(taps, tag + "_w"))
        out, bias_input = conv.output[0], [conv.input[2]] if bias else []
        # The bias goes on the ConvTranspose when it is the block's whole output, else on the skip's Conv.
        new = [helper.make_node("ConvTranspose", [x, tag + "_w"] + (bias_input if skip is None else []),
                                [out if skip is None else tag + "_up"], strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[4, 4], name=tag)]
        if skip is not None:
            extra.append(numpy_helper.from_array(np.ascontiguousarray(w[:, src_shape[1]:]), tag + "_skip_w"))
            new.append(helper.make_node("Conv", [skip, tag + "_skip_w"] + bias_input, [tag + "_skip"], kernel_shape=[3, 3],
                                        pads=[1, 1, 1, 1], name=tag + "_skip"))
            new.append(helper.make_node("Add", [tag + "_up", tag + "_skip"], [out], name=tag + "_add"))
            drop.add(id(concat))
        drop.update({id(node), id(conv)})
        add[id(conv)] = new
    nodes = [kept for node in model.graph.node for kept in add.get(id(node), []) + ([node] if id(node) not in drop else [])]
    used = {name for n in nodes for name in n.input} | outputs | {i.name for i in model.graph.input}
    initializers = [t for t in model.graph.initializer if t.name in used]  # the replaced convolutions' weights go
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    _save(model, nodes, extra, dst)
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
    parser.add_argument("--rewrite", nargs="*", choices=REWRITES, default=[])
    parser.add_argument("--calibration-csv", type=Path, default=None, help="quantize each rewritten copy to int8 on these slices")
    parser.add_argument("--calibration-slices", type=int, default=64)
    args = parser.parse_args()
    print(machine())
    inputs = np.random.default_rng(0).standard_normal((args.batch, 3, 256, 256)).astype(np.float32)
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-ort-rewrite-"))
    models = {m.name: m for m in args.models}
    if args.rewrite and args.calibration_csv:
        from gliomaseg.data.intensity import DEFAULT_INTENSITY
        from gliomaseg.export.quantization import load_slices, quantize_int8
        from gliomaseg.modeling.spec import read_onnx_metadata
    for original in args.models:
        for how in args.rewrite:
            copy = work / f"{original.stem}.{how}.onnx"
            count = rewrite_subpixel(original, copy) if how == "subpixel" else rewrite_upsampling(original, copy, how)
            print(f"{copy.name}: {count} Resize node(s) replaced")
            models[copy.name] = copy
        if args.rewrite and args.calibration_csv:
            meta = read_onnx_metadata(original) or {}
            calibration = load_slices(args.calibration_csv, int(meta.get("image_size", 256)), limit=args.calibration_slices,
                                      intensity=meta.get("intensity", DEFAULT_INTENSITY)).images
            for name in [original.name] + [f"{original.stem}.{how}.onnx" for how in args.rewrite]:
                quantized = work / (Path(name).stem + ".int8.onnx")
                quantize_int8(models[name], quantized, calibration)
                models[quantized.name] = quantized
    reference = {}
    for name, path in models.items():
        out = session(path).run(None, {session(path).get_inputs()[0].name: inputs})[0]
        base = functools.reduce(lambda n, how: n.replace(f".{how}", ""), REWRITES, name)
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
