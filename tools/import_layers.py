"""Check that every hrkd_ds module imports only from its own layer and the layers below it
(docs/INTERFACES.md): prints each upward import and exits 1 if there is one, 0 otherwise.

    python tools/import_layers.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hrkd_ds"

# bottom-up, as docs/INTERFACES.md draws them; a top-level module or folder of hrkd_ds -> its layer
LAYERS = {
    "errors": 0, "io": 0, "tables": 0, "allocator": 0,
    "config": 1, "tracking": 1,
    "models": 2,
    "data": 3,
    "distill": 4,
    "engine": 5,
    "stages": 6,
    "analysis": 7,
    "train": 8, "predict": 8, "export_onnx": 8, "plan": 8, "plan_inputs": 8,
}


def room(module: str) -> str | None:
    """`hrkd_ds.engine.loop` -> `engine`; `hrkd_ds` itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "hrkd_ds" else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every hrkd_ds import in the file, lazy ones inside functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in out if m == "hrkd_ds" or m.startswith("hrkd_ds.")]


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """One line per import from a higher layer (or from a room LAYERS does not name)."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        own = room(".".join(rel.with_suffix("").parts))
        if own is None or own == "__init__":
            continue
        for line, module in imports(path):
            target = room(module)
            if target is None or target == own:
                continue
            if own not in LAYERS or target not in LAYERS:
                problems.append(f"{rel}:{line}: {own} or {target} has no layer in tools/import_layers.py")
            elif LAYERS[target] > LAYERS[own]:
                problems.append(f"{rel}:{line}: {own} (layer {LAYERS[own]}) imports {module} (layer {LAYERS[target]})")
    return problems


def main() -> int:
    problems = upward_imports()
    for p in problems:
        print(p)
    print(f"{len(problems)} upward import(s)" if problems else "no upward imports")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
