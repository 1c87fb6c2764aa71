"""tools/ are thin drivers of the installed package (`pip install -e .`, tools/setup.sh): none edits
sys.path to find it, so a tool always runs the code the tests and the trainer run."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _sys_path_edits(source: str) -> list[int]:
    """Lines that touch `sys.path` (insert, append, assignment, ...)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys"]


def test_the_check_sees_an_edit():
    assert _sys_path_edits("import sys\nsys.path.insert(0, '..')\nimport os\n") == [2]
    assert _sys_path_edits("import os\nos.path.join('a')\n") == []


def test_no_tool_edits_sys_path():
    edits = {p.name: lines for p in sorted((REPO / "tools").glob("*.py")) if (lines := _sys_path_edits(p.read_text()))}
    assert edits == {}
