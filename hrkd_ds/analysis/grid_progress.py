"""Where the reproduction grid stands: which cells are done, wanted, ready or waiting.

Why apart from the runner: `--list` and the run loop (grid_schedule.py) must agree on what is
left to do, and both read it from the grid directory and the archive alone, so a fresh machine
with only the committed archive knows as much as the machine that ran the cells.

A cell's state, as `--list` prints it:

    done      finished in the live grid
    archived  a student cell recorded in the archive (docs/results/cells/): counts as done
    unneeded  a teacher or general cell whose users are all done: nothing would load it
    ready     everything it needs has finished in the live grid: the next run may start it
    waiting   a prerequisite (teacher, general stage) has not finished here yet
"""

from __future__ import annotations

from pathlib import Path

from hrkd_ds.analysis.archive import archived
from hrkd_ds.analysis.grid import GridCell, run_order


class Progress:
    """Which cells are done: finished in the live grid, or (student cells) recorded in the archive.
    A teacher or general cell is wanted only while some selected student cell that needs it is not
    done, or when no selected cell needs it at all (it was asked for by name)."""

    def __init__(self, cells: list[GridCell], root: Path, archive: Path):
        self.cells, self.root, self.archive = cells, root, archive
        self.by_id = {c.id: c for c in cells}

    def done(self, cell: GridCell) -> bool:
        return cell.finished(self.root) or (cell.stage == "distill" and archived(self.archive, cell.id))

    def wanted(self, cell: GridCell) -> bool:
        users = [c for c in self.cells if cell.id in c.needs]
        return not self.done(cell) and (not users or any(not self.done(u) for u in users))

    def waits_for(self, cell: GridCell) -> list[str]:
        """The prerequisites not yet finished in the live grid (an archive holds no models to load)."""
        return [n for n in cell.needs if not self.by_id[n].finished(self.root)]

    def state(self, cell: GridCell) -> str:
        if cell.finished(self.root):
            return "done"
        if self.done(cell):
            return "archived"
        if not self.wanted(cell):
            return "unneeded"
        return "waiting" if self.waits_for(cell) else "ready"

    def order(self) -> list[GridCell]:
        """The order a run takes the cells in (grid.run_order: prerequisites just before their first pending user)."""
        return run_order(self.cells, self.done)

    def listing(self) -> list[str]:
        """`--list`: each cell's state in run order, then how many are done and where."""
        lines = [f"{self.state(c):8} {c.id}" for c in self.order()]
        done = sum(self.done(c) for c in self.cells)
        return lines + [f"{done}/{len(self.cells)} cells done in {self.root} or {self.archive}"]
