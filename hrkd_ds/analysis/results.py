"""Results of a reproduction grid: per-slice tables (mean +- std over seeds), paired bootstrap, charts.

A grid is a directory of cells, each a trainer run with its own `cell.json`:

    {"dataset": str, "fraction": float, "method": str, "seed": int, "student": str,   # required
     "teacher": str,   # optional: teacher identity; cells naming the same teacher count it once
     "run_dir": str}   # optional: trainer output dir, relative to the cell dir (default: the cell dir)

and, once finished, `<run_dir>/results.json` and `<run_dir>/student/predictions.json`.
A slice is one (dataset, fraction, student); its rows are the teacher and each method.

Why the numbers come from results.json and the bootstrap from predictions.json: results.json is
what the trainer reported; predictions let two methods be compared example by example. Where
both exist they are checked against each other, so a mis-ordered or mis-labelled export shows.
A cell without student test results (not started, crashed, still running) is listed as missing,
never silently averaged in as a partial run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hrkd_ds.analysis.compression_summary import summarize_compression
from hrkd_ds.analysis.domain_weights import SUMMARY_FILE, mean_over_runs, summarize_run
from hrkd_ds.analysis.bootstrap import DEFAULT_N_BOOT, pair_from_predictions, paired_bootstrap
from hrkd_ds.analysis.results_render import plot_slice, render_markdown, slice_slug
from hrkd_ds.io import atomic_write_json, atomic_write_text

REQUIRED_KEYS = ("dataset", "fraction", "method", "seed", "student")
METHOD_ORDER = ("none", "kd", "hrkd")
# the graph's ablations (configs/reproduce/grid.yaml): each against the default it changes one switch
# of, and against KD, the baseline it has to beat
ABLATIONS = ("hrkd-nodrop", "hrkd-frozen", "hrkd-nohier", "hrkd-scores", "reference", "hrkd-residual", "hrkd-robust")
# the question; then: does distilling pay at all, and does the label term (the -ce cells) change that?
DEFAULT_COMPARE = (("hrkd", "kd"), ("kd", "none"), ("hrkd", "none"), ("kd-ce", "kd"), ("kd-ce", "none"), ("hrkd-ce", "kd-ce"),
                   *((a, "hrkd") for a in ABLATIONS), *((a, "kd") for a in ABLATIONS),
                   ("hrkd-robust", "hrkd-nodrop"))  # the graph's objective against today's default
_CHECK_TOL = 1e-6


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

    @property
    def slice_key(self) -> tuple[str, float, str]:
        return (self.dataset, self.fraction, self.student)

    def predictions(self, role: str = "student") -> dict[str, Any] | None:
        path = self.run_dir / role / "predictions.json"
        try:
            return json.loads(path.read_text())
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


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; None for one value: a single seed says nothing about spread)."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": int(len(arr))}


def _ordered_methods(methods: Iterable[str]) -> list[str]:
    ms = set(methods)
    return [m for m in METHOD_ORDER if m in ms] + sorted(ms - set(METHOD_ORDER))


def _domains(cells: list[Cell], split: str) -> list[str]:
    out: list[str] = []
    for c in cells:
        for role in ("teacher", "student"):
            for d in c.results.get(role, {}).get(split, {}):
                if d != "average" and d not in out:
                    out.append(d)
    return out


def _row(name: str, entries: list[tuple[int, dict[str, Any]]], domains: list[str]) -> dict[str, Any]:
    """Mean/std over runs of each domain's and the average's accuracy, per split."""
    row: dict[str, Any] = {"model": name, "n": len(entries), "seeds": sorted({s for s, _ in entries})}
    for split in ("test", "dev"):
        accs = [r[split] for _, r in entries if isinstance(r.get(split), dict)]
        if accs:
            row[split] = {k: summarize([a[k] for a in accs if k in a]) for k in [*domains, "average"]
                          if any(k in a for a in accs)}
    return row


def _teacher_entries(cells: list[Cell]) -> list[tuple[int, dict[str, Any]]]:
    """One entry per distinct teacher: the explicit id, else its exact test numbers."""
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for c in cells:
        t = c.results.get("teacher")
        if not isinstance(t, dict) or "test" not in t:
            continue
        key = c.teacher_id if c.teacher_id is not None else json.dumps(t["test"], sort_keys=True)
        seen.setdefault(key, (c.seed, t))
    return list(seen.values())


def _check_predictions(cell: Cell, preds: dict[str, Any], split: str, warnings: list[str]) -> None:
    """Accuracy recomputed from predictions must equal the reported one."""
    reported = cell.results["student"].get(split, {})
    for d, p in preds.get(split, {}).items():
        if d not in reported or not len(p.get("label", [])):
            continue
        acc = float(np.mean(np.asarray(p["pred"]) == np.asarray(p["label"])))
        if abs(acc - float(reported[d])) > _CHECK_TOL:
            warnings.append(f"{cell.cell_dir.name}: {split}/{d} accuracy from predictions {acc:.6f} "
                            f"!= results.json {float(reported[d]):.6f}")


def _compare(by_method: dict[str, dict[int, Cell]], a: str, b: str, domains: list[str], split: str,
             n_boot: int, seed: int, warnings: list[str]) -> dict[str, Any]:
    seeds = sorted(set(by_method.get(a, {})) & set(by_method.get(b, {})))
    pairs, used = [], []
    for s in seeds:
        ca, cb = by_method[a][s], by_method[b][s]
        pa, pb = ca.predictions(), cb.predictions()
        if pa is None or pb is None:
            warnings.append(f"{a} - {b}, seed {s}: no predictions.json for {a if pa is None else b}")
            continue
        _check_predictions(ca, pa, split, warnings)
        _check_predictions(cb, pb, split, warnings)
        try:
            pairs.append(pair_from_predictions(pa, pb, split, domains))
        except (KeyError, ValueError) as e:
            warnings.append(f"{a} - {b}, seed {s}: cannot pair predictions ({e!r})")
            continue
        used.append(s)
    out: dict[str, Any] = {"a": a, "b": b, "split": split, "seeds": used, "bootstrap": None}
    if pairs:
        out["bootstrap"] = paired_bootstrap(pairs, n_boot=n_boot, seed=seed).to_dict()
    return out


def _domain_weights(by_method: dict[str, dict[int, Cell]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method that logged weights, the mean of each statistic over its seeds."""
    out = {}
    for m in methods:
        runs = [w for _, c in sorted(by_method[m].items()) if (w := c.domain_weights()) is not None]
        if runs:
            out[m] = mean_over_runs(runs)
    return out


def build_slices(cells: list[Cell], *, compare: Sequence[tuple[str, str]] = DEFAULT_COMPARE, split: str = "test",
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> list[dict[str, Any]]:
    """One summary dict per (dataset, fraction, student), sorted by that key."""
    groups: dict[tuple[str, float, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.slice_key, []).append(c)
    slices = []
    for key in sorted(groups):
        group, warnings = groups[key], []
        by_method: dict[str, dict[int, Cell]] = {}
        for c in group:
            if c.seed in by_method.setdefault(c.method, {}):
                warnings.append(f"duplicate {c.method} seed {c.seed}: {c.cell_dir.name} ignored, "
                                f"kept {by_method[c.method][c.seed].cell_dir.name}")
                continue
            by_method[c.method][c.seed] = c
        domains = _domains(group, split)
        methods = _ordered_methods(by_method)
        rows = []
        teachers = _teacher_entries(group)
        if teachers:
            rows.append(_row("teacher", teachers, domains))
        rows += [_row(m, [(s, c.results["student"]) for s, c in sorted(by_method[m].items())], domains) for m in methods]
        all_seeds = sorted({s for m in by_method.values() for s in m})
        incomplete = {m: [s for s in all_seeds if s not in by_method[m]] for m in methods}
        slices.append({
            "dataset": key[0], "fraction": key[1], "student": key[2], "split": split, "domains": domains,
            "rows": rows,
            "comparisons": [_compare(by_method, a, b, domains, split, n_boot, seed, warnings)
                            for a, b in compare if a in by_method and b in by_method],
            "incomplete_seeds": {m: s for m, s in incomplete.items() if s},
            "compression": summarize_compression({m: by_method[m] for m in methods}),
            "domain_weights": _domain_weights(by_method, methods),
            "cells": sorted(c.id or str(c.cell_dir) for c in group),
            "warnings": warnings,
        })
    return slices


def load_legacy_slices(legacy_dir: str | Path | None) -> list[dict[str, Any]]:
    """Slice summaries whose cells' records are gone (docs/results/legacy/): kept, marked, shown
    beside the grid's own rerun of the slice, and dropped once that one has at least as many cells."""
    out = []
    for p in sorted(Path(legacy_dir).glob("*.json")) if legacy_dir and Path(legacy_dir).is_dir() else []:
        sl = json.loads(p.read_text())
        if isinstance(sl, dict) and {"dataset", "fraction", "student", "rows"} <= sl.keys():
            out.append({**sl, "legacy": sl.get("legacy") or f"{p.name}: summary only, its cells' records were lost",
                        "compression": _retained_from_means(sl)})
    return out


def _retained_from_means(sl: dict[str, Any]) -> list[dict[str, Any]]:
    """A legacy summary's compression rows with accuracy retained recomputed as the ratio of its
    rows' mean test averages, the definition the live slices use (older summaries kept the median
    run's ratio); a row whose means are missing keeps what it had."""
    mean = {r.get("model"): ((r.get("test") or {}).get("average") or {}).get("mean") for r in sl.get("rows", [])}
    t = mean.get("teacher")
    return [{**c, "retained_pct": 100.0 * mean[c.get("method")] / t}
            if t and mean.get(c.get("method")) is not None else c for c in sl.get("compression") or []]


def merge_legacy(slices: list[dict[str, Any]], legacy: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A partial rerun is shown at once (its cells are the regenerable ones), the earlier summary
    after it until the rerun catches up: the two grids side by side are a reproduction check."""
    key = lambda s: (s["dataset"], s["fraction"], s["student"])  # noqa: E731
    cells = {key(s): len(s["cells"]) for s in slices}
    kept = [old for old in legacy if cells.get(key(old), -1) < len(old["cells"])]
    return sorted([*slices, *kept], key=lambda s: (*key(s), bool(s.get("legacy"))))


def _remove_dropped_slices(json_dir: Path, keep: set[str]) -> None:
    """A slice the last report wrote and this one does not (a legacy summary its rerun replaced)
    leaves no stale JSON or chart behind; only files the last summary.json names are touched."""
    try:
        before = {slice_slug(sl) for sl in _read_json(json_dir / "summary.json")["slices"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable last summary: nothing is known to be stale
    for slug in before - keep:
        for ext in (".json", ".png"):
            (json_dir / f"{slug}{ext}").unlink(missing_ok=True)


def write_results(grid_dir: str | Path | Sequence[str | Path], md_path: str | Path = "docs/RESULTS.md",
                  json_dir: str | Path = "docs/results", *, compare: Sequence[tuple[str, str]] = DEFAULT_COMPARE,
                  n_boot: int = DEFAULT_N_BOOT, seed: int = 0, charts: bool = True, intro: str = "",
                  legacy_dir: str | Path | None = None) -> dict[str, Any]:
    """Scan (one grid root, or several holding the same grid: live directory and archive),
    summarise, write RESULTS.md, one JSON (and PNG) per slice and summary.json; returns the summary."""
    md_path, json_dir = Path(md_path), Path(json_dir)
    roots = [grid_dir] if isinstance(grid_dir, (str, Path)) else list(grid_dir)
    cells, missing = scan_grids(roots)
    slices = merge_legacy(build_slices(cells, compare=compare, n_boot=n_boot, seed=seed), load_legacy_slices(legacy_dir))
    _remove_dropped_slices(json_dir, {slice_slug(sl) for sl in slices})
    links: dict[str, str] = {}
    for sl in slices:
        slug = slice_slug(sl)
        atomic_write_json(json_dir / f"{slug}.json", sl)
        if charts:
            png = json_dir / f"{slug}.png"
            plot_slice(sl, png)
            links[slug] = os.path.relpath(png.resolve(), md_path.parent.resolve())
    source = ", ".join(str(r) for r in roots)
    summary = {"grid": source, "slices": slices, "missing": missing}
    atomic_write_json(json_dir / "summary.json", summary)
    atomic_write_text(md_path, render_markdown(slices, missing, links, source=source, intro=intro))
    return summary
