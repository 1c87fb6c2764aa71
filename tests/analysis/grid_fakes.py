"""Constructed grids for the progress and schedule tests: a teacher, a general stage and student
cells, finished or archived on disk the way the trainer and sync_archive leave them."""

from __future__ import annotations

from pathlib import Path

from hrkd_ds.analysis.archive import RECORD_FILES
from hrkd_ds.analysis.grid import ROLE_OF_STAGE, GridCell
from hrkd_ds.io import atomic_write_json

TEACHER = "amazon/f1.0/teacher"
GENERAL = "amazon/f1.0/general-L4"


def student(method: str, seed: int = 1, general: bool = False) -> GridCell:
    name = "L4" if general else "L3"
    meta = {"dataset": "amazon", "fraction": 1.0, "method": method, "seed": seed, "student": name, "teacher": TEACHER}
    return GridCell(f"amazon/f1.0/{name}/{method}/s{seed}", "distill", "configs/amazon_full.yaml", [],
                    [TEACHER, GENERAL] if general else [TEACHER], meta)


def teacher() -> GridCell:
    return GridCell(TEACHER, "teacher", "configs/amazon_full.yaml", [])


def general() -> GridCell:
    return GridCell(GENERAL, "general", "configs/amazon_full.yaml", [])


def finish(root: Path, cell: GridCell) -> None:
    """What a finished trainer run leaves: its stage's DONE marker and results.json entry; a
    student cell also its cell.json and predictions, so sync_archive can copy its record."""
    role = ROLE_OF_STAGE[cell.stage]
    run = cell.run_dir(root)
    (run / role).mkdir(parents=True, exist_ok=True)
    (run / role / "DONE").write_text("ok\n")
    entry = {"method": cell.meta.get("method"), "test": {"books": 0.5, "average": 0.5}} if role == "student" else {}
    atomic_write_json(run / "results.json", {role: entry})
    if role == "student":
        atomic_write_json(run / "cell.json", cell.meta)
        atomic_write_json(run / "student" / "predictions.json", {"test": {"books": {"pred": [0, 1], "label": [0, 0]}}})


def archive(archive_dir: Path, cell: GridCell) -> None:
    """A complete record in the archive (as a committed docs/results/cells/ holds it)."""
    for name in RECORD_FILES:
        atomic_write_json(archive_dir / cell.id / name, {})
