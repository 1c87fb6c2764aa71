"""A grid's finished cells, read from disk: what counts as finished and what is listed as missing.

A grid is a directory of cells, each a trainer run with its own `cell.json`:

    {"dataset": str, "fraction": float, "method": str, "seed": int, "student": str,   # required
     "teacher": str,   # optional: teacher identity; cells naming the same teacher count it once
     "run_dir": str}   # optional: trainer output dir, relative to the cell dir (default: the cell dir)

and, once finished, `<run_dir>/results.json` and `<run_dir>/student/predictions.json`.
A cell without student test results (not started, crashed, still running) is listed as missing,
never silently averaged in as a partial run. Split from results.py (which summarises the cells).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hrkd_ds.analysis.cell_timing import TIMING_FILE
from hrkd_ds.analysis.domain_weights import SUMMARY_FILE, summarize_run

REQUIRED_KEYS = ("dataset", "fraction", "method", "seed", "student")
# the methods a run can choose (distill/methods.py; tests/test_choices.py holds them equal), in table order
METHOD_ORDER = ("none", "kd", "hrkd", "logit-kd", "two-stage")


def student_cell_id(dataset: str, fraction: Any, student: str, method: str, seed: int) -> str:
    """A student cell's directory under its grid root (grid.expand names cells so; selection reads them)."""
    return f"{dataset}/f{fraction}/{student}/{method}/s{seed}"


def parse_student_cell_id(cell_id: str) -> tuple[str, float, str, str, int]:
    """The inverse of student_cell_id: (dataset, fraction as a float, student, method, seed)."""
    dataset, frac, student, method, seed = cell_id.split("/")
    return dataset, float(frac[1:]), student, method, int(seed[1:])


@dataclass
class Cell:
    """One finished grid cell."""

    cell_dir: Path
    run_dir: Path
    dataset: str
    fraction: float
    method: str
    seed: int
    student: str
    teacher_id: str | None
    results: dict[str, Any]
    id: str = ""  # the cell's directory relative to its grid root: the same in the live grid and the archive
    _preds: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # role -> parsed predictions

    @property
    def slice_key(self) -> tuple[str, float, str]:
        return (self.dataset, self.fraction, self.student)

    def predictions(self, role: str = "student") -> dict[str, Any] | None:
        """The run's predictions.json (read once: every comparison, flag and re-scoring reads it)."""
        if role not in self._preds:
            try:
                self._preds[role] = json.loads((self.run_dir / role / "predictions.json").read_text())
            except (OSError, ValueError):
                self._preds[role] = None
        return self._preds[role]

    def timing(self) -> dict[str, Any] | None:
        """The run's timing.json (what each attempt cost, analysis/cell_timing.py); None without one."""
        try:
            return json.loads((self.run_dir / TIMING_FILE).read_text())
        except (OSError, ValueError):
            return None

    def domain_weights(self) -> dict[str, Any] | None:
        """The run's weight statistics: the archived summary, else computed from the live run's log."""
        try:
            return json.loads((self.run_dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            return summarize_run(self.run_dir)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _load_cell(cell_json: Path) -> Cell:
    """A finished cell, or ValueError saying why it does not count."""
    try:
        meta = _read_json(cell_json)
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable cell.json ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError("cell.json is not an object")
    absent = [k for k in REQUIRED_KEYS if k not in meta]
    if absent:
        raise ValueError(f"cell.json lacks {absent}")
    run_dir = cell_json.parent / meta.get("run_dir", ".")
    res_path = run_dir / "results.json"
    if not res_path.is_file():
        raise ValueError("unfinished: no results.json")
    try:
        results = _read_json(res_path)
        avg = results["student"]["test"]["average"]
        float(avg)
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError("unfinished: results.json has no student test average") from None
    # A base method's cell must have trained that method (a mislabelled run would corrupt the main
    # table); a variant (kd-ce, hrkd-nodrop, reference, ...) is the grid's name for overrides of a
    # base method, so its results.json names the base and the row takes the grid's name.
    method, trained = str(meta["method"]), str(results["student"].get("method", meta["method"]))
    if method in METHOD_ORDER and trained != method:
        raise ValueError(f"cell.json says method {method!r} but results.json says {trained!r}")
    teacher = meta.get("teacher")
    return Cell(cell_dir=cell_json.parent, run_dir=run_dir, dataset=str(meta["dataset"]), fraction=float(meta["fraction"]),
                method=method, seed=int(meta["seed"]), student=str(meta["student"]),
                teacher_id=None if teacher is None else str(teacher), results=results)


def scan_grid(grid_dir: str | Path) -> tuple[list[Cell], list[dict[str, str]]]:
    """(finished cells, [{"cell", "reason"}] for cells that do not count), in path order."""
    grid_dir = Path(grid_dir)
    cells, missing = [], []
    for cj in sorted(grid_dir.rglob("cell.json")):
        cid = cj.parent.relative_to(grid_dir).as_posix()
        try:
            cell = _load_cell(cj)
        except ValueError as e:
            missing.append({"cell": cid, "reason": str(e)})
            continue
        cell.id = cid
        cells.append(cell)
    return cells, missing


def scan_grids(roots: Sequence[str | Path]) -> tuple[list[Cell], list[dict[str, str]]]:
    """scan_grid over several roots holding the same grid (the live directory, the archive): each
    cell id once, from the first root where it finished; missing only where it finished nowhere."""
    found: dict[str, Cell] = {}
    missing: dict[str, dict[str, str]] = {}
    resolved = [Path(r).resolve() for r in roots]
    for root in resolved:
        if not root.is_dir():
            continue
        nested = [r for r in resolved if r != root and r.is_relative_to(root)]  # an archive inside the grid
        cells, miss = scan_grid(root)
        for c in cells:
            if not any(c.cell_dir.resolve().is_relative_to(n) for n in nested):
                found.setdefault(c.id, c)
        for m in miss:
            missing.setdefault(m["cell"], m)
    return sorted(found.values(), key=lambda c: c.id), [m for cid, m in sorted(missing.items()) if cid not in found]
