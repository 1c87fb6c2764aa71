"""The grid's record of finished student cells, kept in the repository (docs/results/cells/).

Why: a grid directory holds checkpoints and models (hundreds of MB per cell) and lives on one
machine; when that machine goes, so do the runs, and the report can no longer be rebuilt. What
the report needs of a finished student cell is three small files: `cell.json`, `results.json`
and `student/predictions.json` (a few tens of kB), and for a run that logged domain weights
their summary, `student/domain_weights.json` (hrkd_ds/analysis/domain_weights.py), and what the
cell cost to run, `timing.json` (hrkd_ds/analysis/cell_timing.py). Copying them
into the archive as each cell finishes makes the grid resumable across machines and sessions: an
archived cell is not rerun, and the report reads the archive beside the live grid. Teacher and
general cells are not archived: their outputs are models that later cells load, so they are
rerun where needed.

Archive layout: the grid's own, `<archive>/<cell id>/{cell.json, results.json,
student/predictions.json[, student/domain_weights.json, timing.json]}`, with `run_dir` "." in the copied cell.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from hrkd_ds.analysis.cell_timing import TIMING_FILE
from hrkd_ds.analysis.domain_weights import SUMMARY_FILE, summarize_run
from hrkd_ds.analysis.cells import Cell, scan_grid
from hrkd_ds.io import atomic_write_json

RECORD_FILES = ("cell.json", "results.json", "student/predictions.json")


def archived(archive: Path, cell_id: str) -> bool:
    """A student cell counts as finished once its record is complete in the archive."""
    return all((archive / cell_id / f).is_file() for f in RECORD_FILES)


def archive_cell(cell: Cell, cell_id: str, archive: Path) -> bool:
    """Copy one finished cell's record; True when something changed. results.json goes last, so
    a record cut short by a crash reads as unfinished (scan_grid needs results.json)."""
    dest = archive / cell_id
    meta = json.loads((cell.cell_dir / "cell.json").read_text())
    meta["run_dir"] = "."
    preds = cell.predictions()
    if preds is None:  # without predictions a record cannot be compared example by example
        return False
    new = {"cell.json": meta, "student/predictions.json": preds}
    weights = summarize_run(cell.run_dir)  # the run's metrics.jsonl stays behind: its graph's behaviour goes along
    if weights is not None:
        new[SUMMARY_FILE] = weights
    timing = cell.timing()
    if timing is not None:
        new[TIMING_FILE] = timing
    new["results.json"] = cell.results
    changed = False
    for name, value in new.items():
        path = dest / name
        try:
            same = json.loads(path.read_text()) == value
        except (OSError, ValueError):
            same = False
        if not same:
            atomic_write_json(path, value)
            changed = True
    return changed


def sync_archive(grid_root: Path, archive: Path) -> list[str]:
    """Archive every finished student cell of the live grid; the ids that were added or updated."""
    if not grid_root.is_dir():
        return []
    cells, _ = scan_grid(grid_root)
    inside = archive.resolve()
    # an archive kept inside the grid directory holds cells too: never archive those again
    cells = [c for c in cells if not c.cell_dir.resolve().is_relative_to(inside)]
    return [c.id for c in cells if archive_cell(c, c.id, archive)]
