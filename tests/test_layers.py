"""The package's layout is its architecture: sub-packages import only downward, and no module imports itself
back through others (README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import gliomaseg

PACKAGE = Path(gliomaseg.__file__).parent
# Lower layers first; a module may import its own sub-package or a lower layer, never a higher or an equal one.
LAYERS = [
    ["core"],
    ["assets", "data"],
    ["modeling"],
    ["inference"],
    ["evaluation"],
    ["training", "export", "predict"],
    ["experiments", "serve"],
    ["reporting"],
    ["cli"],
    ["__main__"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every gliomaseg module ``path`` imports, at the top or inside a function (a lazy import is still an arrow)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gliomaseg"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("gliomaseg"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from gliomaseg.core import io`
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in graph()} - {""} <= set(RANK)


def test_the_package_root_imports_nothing_of_its_own():
    assert graph()["gliomaseg"] == set()


def test_no_import_goes_up_or_sideways():
    wrong = []
    for module, targets in graph().items():
        if module == "gliomaseg":
            continue
        for target in targets:
            if target == "gliomaseg":
                continue  # __version__
            a, b = layer(module), layer(target)
            if a != b and RANK[b] >= RANK[a]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else f"{node} -> {target}")
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_gliomaseg_import_resolves():
    # graph() keeps only arrows to modules that exist; a lazy import of a moved or renamed name would escape it.
    import importlib
    import importlib.util

    missing = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("gliomaseg"):
                if node.module == "gliomaseg.__main__":
                    continue
                module = importlib.import_module(node.module)
                missing += [f"{module_name(path)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, "imports of names that do not exist:\n" + "\n".join(sorted(missing))


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path):
    # The rule itself: a data module importing inference is caught, one importing core is not.
    probe = tmp_path / "probe.py"
    probe.write_text("from gliomaseg.inference.segment import segment\nfrom gliomaseg.core.io import write_text\n")
    found = imports_of(probe)
    assert "gliomaseg.inference.segment" in found and "gliomaseg.core.io" in found
    assert RANK[layer("gliomaseg.inference.segment")] >= RANK["data"] > RANK[layer("gliomaseg.core.io")]


def test_the_cli_loads_nothing_heavy_before_a_command_runs():
    # `gliomaseg --help` and argument errors stay instant: the CLI imports numpy, pandas or torch only inside a command.
    import subprocess
    import sys

    code = "import sys, gliomaseg.cli; print(sorted(m for m in ('numpy', 'pandas', 'torch', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_predict_path_loads_neither_torch_nor_scipy(tmp_path):
    # `gliomaseg predict` on the shipped ONNX model, slices without masks: it runs without torch, and scipy (0.3-0.4 s
    # to import) only where a post-processing step or a surface distance against a truth needs it.
    import shutil
    import subprocess
    import sys

    from gliomaseg.data.synth import generate

    generate(tmp_path / "synth", patients=1, slices=3, seed=2)
    patient = tmp_path / "TCGA_XX_0001_20000101"
    patient.mkdir()
    for image in sorted((tmp_path / "synth").rglob("*.tif")):
        if not image.stem.endswith("_mask"):
            shutil.copy(image, patient / image.name.replace(image.parent.name, patient.name))
    code = ("import sys; from gliomaseg.cli import main; "
            f"assert main(['predict', '--input', r'{patient}', '--out', r'{tmp_path / 'out'}']) == 0; "
            "print(sorted(m for m in ('torch', 'scipy', 'lightning', 'matplotlib') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert len(list((tmp_path / "out").rglob("*_pred.png"))) == 3
