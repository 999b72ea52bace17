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
