"""What a grid cell cost to run: wall and CPU seconds of each attempt, kept with its record.

Why: a recipe's cost is part of its result (a recipe that needs 5x the steps is only worth it if
it pays 5x), and a figure copied by hand from a log cannot be regenerated. tools/reproduce.py
times every trainer run of a cell and appends it to `<run dir>/timing.json`:

    {"attempts": [{"started": "2026-12-07 22:55:59", "code": "034d97e...", "rc": 0,
                   "wall_s": 1315.6, "cpu_s": 2532.3}, ...]}   # amazon/f0.1/L4H192sel/kd-aug/s2

An attempt that stopped at a checkpoint (rc 3) is continued by the next; the cell's cost is the
sum of its attempts once the last ended with rc 0. Wall time counts pauses and other jobs on the
machine; CPU time (user + system of the trainer and what it waited for) does not count a pause
(`kill -STOP`) and is the steadier figure on a shared machine. The archive copies the file.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any, Callable

from hrkd_ds.io import atomic_write_json

TIMING_FILE = "timing.json"


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(run: Callable[[], int]) -> tuple[int, float, float]:
    """(run's exit code, wall s, CPU s of the child processes it waited for). One child at a time:
    RUSAGE_CHILDREN counts every child this process has reaped."""
    cpu0, t0 = _children_cpu_s(), time.monotonic()
    rc = run()
    return rc, time.monotonic() - t0, _children_cpu_s() - cpu0


def record_attempt(run_dir: str | Path, *, started: str, code: str, rc: int, wall_s: float, cpu_s: float) -> None:
    """Append one attempt to the run's timing.json (written atomically; an unreadable one starts over)."""
    path = Path(run_dir) / TIMING_FILE
    try:
        attempts = list(json.loads(path.read_text())["attempts"])
    except (OSError, ValueError, KeyError, TypeError):
        attempts = []
    attempts.append({"started": started, "code": code, "rc": int(rc), "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1)})
    atomic_write_json(path, {"attempts": attempts})


def cell_cost(timing: Any) -> dict[str, float] | None:
    """{"wall_s", "cpu_s", "attempts"} summed over a finished cell's attempts; None unless the record
    is well formed and its last attempt ended with rc 0 (a cell still running has no cost yet)."""
    try:
        attempts = timing["attempts"]
        if not attempts or int(attempts[-1]["rc"]) != 0:
            return None
        return {"wall_s": sum(float(a["wall_s"]) for a in attempts), "cpu_s": sum(float(a["cpu_s"]) for a in attempts),
                "attempts": len(attempts)}
    except (KeyError, TypeError, ValueError):
        return None
