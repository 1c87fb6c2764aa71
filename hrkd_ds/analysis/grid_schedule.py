"""One pass over the reproduction grid: which cell runs next, which are skipped, when the pass stops.

Why here and not in tools/reproduce.py: these decisions (skip what is done or unneeded, wait for a
prerequisite, stop at --max-hours, stop on a checkpointed exit, list what failed) decide what a
multi-day grid spends its CPU on, and they are unit-tested with constructed cells and a fake
runner (tests/analysis/test_grid_schedule.py). The driver supplies only how a cell runs (the
trainer subprocess), whether a stop was requested (its signal handler), and where lines go.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from hrkd_ds.analysis.archive import sync_archive
from hrkd_ds.analysis.grid import GridCell
from hrkd_ds.analysis.grid_progress import Progress
# the trainer's exit code for a stop it checkpointed (SIGTERM / preemption), declared in errors.py:
# the cell resumes on the next run, and the grid stops after it rather than starting the next cell
from hrkd_ds.errors import EXIT_PREEMPTED as STOPPED_EXIT

REPLANNED = -1  # run_grid's answer when the cells changed under it (never a process exit code)


def last_line(path: Path) -> str:
    """The last non-empty line of a cell's log (at most 300 characters): why a failed cell failed."""
    lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()] if path.is_file() else []
    return lines[-1][:300] if lines else ""


def run_grid(progress: Progress, run_cell: Callable[[GridCell], int], max_hours: float = 0.0,
             stop_requested: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
             say: Callable[[str], None] = print, replan: Callable[[], bool] = lambda: False) -> int:
    """Run every wanted cell whose prerequisites have finished, in run order; 0 when all ran,
    1 when some failed (listed at the end), STOPPED_EXIT when a cell was stopped (rerun to continue),
    REPLANNED when `replan` said, after a cell, that the cells have changed (a phase's pre-registered
    choice was just made: analysis/selection.py); the driver then expands the grid again and
    continues, so the chosen phase runs in its place in phase order, not after the rest.

    After each cell the live grid's finished student cells are archived, so a stop loses nothing.
    --max-hours (0: no limit) is checked before each cell: no new cell starts after it.
    """
    root = progress.root
    start, failed = clock(), []
    for cell in progress.order():
        if not progress.wanted(cell):
            continue
        waits = progress.waits_for(cell)
        if waits:
            say(f"[skip] {cell.id}: waits for {', '.join(waits)}")
            continue
        if max_hours and clock() - start > max_hours * 3600:
            say(f"[stop] --max-hours {max_hours} reached; rerun to continue")
            break
        t0 = clock()
        say(f"[run ] {cell.id}")
        rc = run_cell(cell)
        say(f"[{'done' if rc == 0 else 'FAIL'}] {cell.id} ({clock() - t0:.0f} s, exit {rc})")
        for cid in sync_archive(root, progress.archive):
            say(f"[arch] {cid} -> {progress.archive}")
        if rc == STOPPED_EXIT or stop_requested():  # checkpointed: resumes on the next run
            say("[stop] stopped; rerun the same command to continue")
            return STOPPED_EXIT
        if rc != 0:
            failed.append(cell.id)
            say(f"       {last_line(cell.run_dir(root) / 'train.log')}")
        if replan():
            say("[plan] a pre-registered choice was made: the grid is expanded again")
            return REPLANNED
    if failed:
        say(f"{len(failed)} cell(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


def run_planned(plan: Callable[[], tuple[Progress, list[str]]], run_cell: Callable[[GridCell], int],
                max_hours: float = 0.0, stop_requested: Callable[[], bool] = lambda: False,
                clock: Callable[[], float] = time.monotonic, say: Callable[[str], None] = print) -> int:
    """run_grid over `plan()` (the expanded grid, and the phases still waiting for a pre-registered
    choice), planned again whenever a cell's result lets one of those choices be made; run_grid's
    answer otherwise. --max-hours counts from the first pass."""
    started = clock()
    planned = [plan()]  # the latest plan: the one that said a choice was made is the one run next

    def choice_made(n_waiting: int) -> bool:
        if not n_waiting:
            return False
        planned.append(plan())
        return len(planned[-1][1]) < n_waiting

    while True:
        progress, waiting = planned[-1]
        for line in waiting:
            say(f"[wait] {line}")
        hours = max(max_hours - (clock() - started) / 3600, 1e-9) if max_hours else 0.0
        rc = run_grid(progress, run_cell, hours, stop_requested, clock, say, replan=lambda n=len(waiting): choice_made(n))
        if rc != REPLANNED:
            return rc
