"""The benchmark scripts import cleanly: a renamed function must break a test, not a benchmark found broken later."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_imports_and_has_main(script: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs the imports, not main()
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


def test_there_are_benchmarks():
    assert {p.stem for p in SCRIPTS} >= {"inference_throughput", "train_throughput", "cpu_paths"}


@pytest.mark.parametrize("how", ["d2s", "expand"])
def test_ort_profile_rewrites_nearest_upsampling_exactly(how: str, tmp_path: Path, monkeypatch):
    # benchmarks/ort_profile.py's claim "each rewrite gives the original's logits exactly" rests on this helper.
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_ort_profile", BENCHMARKS / "ort_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scales = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("two", [1, 1, 2, 2]), ("three", [1, 1, 3, 3]))]
    nodes = [helper.make_node("Resize", ["x", "", "two"], ["y"], mode="nearest", name="up2"),  # ONNX's defaults
             helper.make_node("Resize", ["y", "", "two"], ["y2"], mode="nearest", name="torch", nearest_mode="floor",
                              coordinate_transformation_mode="asymmetric"),  # as torch exports it
             helper.make_node("Resize", ["y2", "", "two"], ["y3"], mode="nearest", name="ceil", nearest_mode="ceil",
                              coordinate_transformation_mode="asymmetric"),  # 2x, but not duplication: left alone
             helper.make_node("Resize", ["y3", "", "three"], ["z"], mode="nearest", name="up3")]  # not 2x: left alone
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 5, 6])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 4, 120, 144])], scales)
    original, rewritten = tmp_path / "m.onnx", tmp_path / f"m.{how}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(original))
    assert module.rewrite_upsampling(original, rewritten, how) == 2
    assert [n.name for n in onnx.load(str(rewritten)).graph.node if n.op_type == "Resize"] == ["ceil", "up3"]
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6)).astype(np.float32)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    assert np.array_equal(run(original), run(rewritten))


def test_ort_profile_subpixel_rewrite_is_the_same_convolution(tmp_path: Path, monkeypatch):
    # Nearest 2x + 3x3 Conv (through a skip Concat, or directly) becomes a ConvTranspose on the small input; every
    # other pattern is left alone.
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_ort_profile", BENCHMARKS / "ort_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(1)
    arrays = {"two": np.array([1, 1, 2, 2], np.float32), "almost_two": np.array([1, 1, 2.000001, 2.000001], np.float32)}
    for name, shape in {"w1": (5, 7), "w2": (2, 5), "w3": (2, 2), "w4": (2, 2), "w5": (2, 2), "w6": (2, 2), "w7": (5, 7),
                        "w8": (5, 5)}.items():
        arrays[name] = (rng.standard_normal((*shape, 3, 3)) / np.sqrt(9 * shape[1])).astype(np.float32)  # values stay ~1
    arrays["b1"], arrays["b3"] = rng.standard_normal(5).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    torch_rule = dict(mode="nearest", nearest_mode="floor", coordinate_transformation_mode="asymmetric")
    nodes = [helper.make_node("Resize", ["x", "", "two"], ["r1"], name="skip_block", **torch_rule),
             helper.make_node("Concat", ["r1", "skip"], ["cat1"], axis=1),
             helper.make_node("Conv", ["cat1", "w1", "b1"], ["c1"], **conv),
             helper.make_node("Resize", ["c1", "", "two"], ["r2"], mode="nearest", name="direct"),  # ONNX's defaults
             helper.make_node("Conv", ["r2", "w2"], ["c2"], **conv),
             helper.make_node("Resize", ["c2", "", "two"], ["r3"], mode="nearest", name="direct_bias"),
             helper.make_node("Conv", ["r3", "w3", "b3"], ["c3"], **conv),
             # left alone: ceil sampling, a stride-2 conv, a scale that is not exactly 2, the skip first, two readers
             helper.make_node("Resize", ["c3", "", "two"], ["r4"], name="ceil", mode="nearest", nearest_mode="ceil",
                              coordinate_transformation_mode="asymmetric"),
             helper.make_node("Conv", ["r4", "w4"], ["c4"], **conv),
             helper.make_node("Resize", ["c4", "", "two"], ["r5"], mode="nearest", name="stride"),
             helper.make_node("Conv", ["r5", "w5"], ["c5"], strides=[2, 2], **conv),
             helper.make_node("Resize", ["c5", "", "almost_two"], ["r6"], name="almost_two", **torch_rule),
             helper.make_node("Conv", ["r6", "w6"], ["z"], **conv),
             helper.make_node("Resize", ["x", "", "two"], ["r7"], name="skip_first", **torch_rule),
             helper.make_node("Concat", ["skip", "r7"], ["cat7"], axis=1),
             helper.make_node("Conv", ["cat7", "w7"], ["c7"], **conv),
             helper.make_node("Resize", ["c7", "", "two"], ["r8"], mode="nearest", name="two_readers"),
             helper.make_node("Conv", ["r8", "w8"], ["c8"], **conv),
             helper.make_node("Add", ["c8", "r8"], ["z2"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 5, 6]),
              helper.make_tensor_value_info("skip", TensorProto.FLOAT, [None, 3, 10, 12])]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 2, 160, 192]),
               helper.make_tensor_value_info("z2", TensorProto.FLOAT, [None, 5, 20, 24])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in arrays.items()])
    original, rewritten = tmp_path / "m.onnx", tmp_path / "m.subpixel.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(original))
    assert module.rewrite_subpixel(original, rewritten) == 3
    kept = onnx.load(str(rewritten)).graph
    assert [n.name for n in kept.node if n.op_type == "Resize"] == ["ceil", "stride", "almost_two", "skip_first", "two_readers"]
    assert sum(n.op_type == "ConvTranspose" for n in kept.node) == 3
    assert not {"w1", "w2", "w3"} & {t.name for t in kept.initializer} and {"b1", "b3", "w4"} <= {t.name for t in kept.initializer}
    feed = {"x": rng.standard_normal((2, 4, 5, 6)).astype(np.float32), "skip": rng.standard_normal((2, 3, 10, 12)).astype(np.float32)}
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)  # noqa: E731
    for got, want in zip(run(rewritten), run(original)):
        assert np.abs(want).max() > 0.1 and np.abs(got - want).max() < 1e-4
