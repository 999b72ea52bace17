"""Print the package layout, one line per module with the first line of its docstring (README "Layout").

    python scripts/layout_tree.py            # the tree
    python scripts/layout_tree.py --lines    # with each module's line count
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gliomaseg"
# The layer order that tests/test_layers.py checks, lowest first.
ORDER = ["core", "assets", "data", "modeling", "inference", "evaluation", "training", "export", "predict",
         "experiments", "serve", "reporting"]


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first if len(first) <= 110 else first[:107].rstrip() + "..."


def tree(lines: bool = False) -> list[str]:
    out = ["src/gliomaseg/"]

    def row(path: Path, indent: str) -> str:
        name = path.name if path.name != "__init__.py" else ""
        count = f"{len(path.read_text(encoding='utf-8').splitlines()):5d}  " if lines else ""
        return f"{indent}{name:<22}{count}{summary(path)}"

    for package in ORDER:
        folder = PACKAGE / package
        out.append(f"  {package}/".ljust(24) + (f"{'':7}" if lines else "") + summary(folder / "__init__.py"))
        for path in sorted(folder.rglob("*.py"), key=lambda p: (p.parent != folder, p.parent.name, p.name != "__init__.py", p.name)):
            if path.parent == folder and path.name == "__init__.py":
                continue
            if path.name == "__init__.py":  # a sub-package of the layer
                out.append(f"    {path.parent.name}/".ljust(24) + (f"{'':7}" if lines else "") + summary(path))
                continue
            out.append(row(path, "      " if path.parent != folder else "    "))
    for name in ("cli.py", "__main__.py"):
        out.append(row(PACKAGE / name, "  "))
    return out


if __name__ == "__main__":
    print("\n".join(tree(lines="--lines" in sys.argv)))
