"""The layering of docs/INTERFACES.md holds: no module imports from a layer above its own, and the
check itself finds an upward import when there is one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_layers", REPO / "tools" / "import_layers.py")
import_layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_layers)


def test_no_module_imports_from_a_higher_layer():
    assert import_layers.upward_imports() == []


def test_an_upward_import_is_reported(tmp_path):
    pkg = tmp_path / "hrkd_ds"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "bad.py").write_text("def f():\n    from hrkd_ds.engine.loop import Trainer\n")
    (pkg / "engine").mkdir()
    (pkg / "engine" / "ok.py").write_text("from hrkd_ds.models.bad import f\n")
    problems = import_layers.upward_imports(pkg)
    assert problems == ["hrkd_ds/models/bad.py:2: models (layer 2) imports hrkd_ds.engine.loop (layer 5)"]
