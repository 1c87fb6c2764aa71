"""Results of a reproduction grid: per-slice tables (mean +- std over seeds), paired bootstrap, charts.

Cells and what counts as finished: cells.py. A slice is one (dataset, fraction, student); its rows
are the teacher and each method.

Why the numbers come from results.json and the bootstrap from predictions.json: results.json is
what the trainer reported; predictions let two methods be compared example by example. Where
both exist they are checked against each other, so a mis-ordered or mis-labelled export shows.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hrkd_ds.analysis.cells import METHOD_ORDER, REQUIRED_KEYS, Cell, _read_json, scan_grid, scan_grids  # noqa: F401 (re-exported)
from hrkd_ds.analysis.compression_summary import summarize_compression
from hrkd_ds.analysis.domain_weights import slice_weights
from hrkd_ds.analysis.bootstrap import DEFAULT_N_BOOT, hierarchical_bootstrap, pair_from_predictions, paired_bootstrap
from hrkd_ds.analysis.duplicates import dedup_average, load_index
from hrkd_ds.analysis.protocol import degenerate_domains, registered_compare, registered_phases, registration
from hrkd_ds.analysis.results_render import plot_slice, render_markdown, slice_slug
from hrkd_ds.analysis.selection import choice_summary, dev_of_cells, resolve
from hrkd_ds.io import atomic_write_json, atomic_write_text

# the graph's ablations (configs/reproduce/grid.yaml): each against the default it changes one switch
# of, and against KD, the baseline it has to beat
ABLATIONS = ("hrkd-nodrop", "hrkd-frozen", "hrkd-nohier", "hrkd-scores", "reference", "hrkd-residual", "hrkd-robust")
# the question; then: does distilling pay at all, and does the label term (the -ce cells) change that?
DEFAULT_COMPARE = (("hrkd", "kd"), ("kd", "none"), ("hrkd", "none"), ("kd-ce", "kd"), ("kd-ce", "none"), ("hrkd-ce", "kd-ce"),
                   *((a, "hrkd") for a in ABLATIONS), *((a, "kd") for a in ABLATIONS),
                   ("hrkd-robust", "hrkd-nodrop"))  # the graph's objective against today's default
_CHECK_TOL = 1e-6


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
    # only the seeds both methods have (a 3-seed ablation against a 5-seed kd: 3 pairs), said as n
    out: dict[str, Any] = {"a": a, "b": b, "split": split, "seeds": used, "n": len(used), "bootstrap": None, "hierarchical": None}
    if pairs:
        out["bootstrap"] = paired_bootstrap(pairs, n_boot=n_boot, seed=seed).to_dict()  # example-only (the first protocol)
        out["hierarchical"] = hierarchical_bootstrap(pairs, n_boot=n_boot, seed=seed)  # protocol v2
    return out


def _degenerate(by_method: dict[str, dict[int, Cell]], split: str) -> list[dict[str, Any]]:
    """Every (run, domain) where one class takes > 90% of the predictions, in method and seed order."""
    return [{"method": m, "seed": s, "cell": c.id or c.cell_dir.name, **flag}
            for m in _ordered_methods(by_method) for s, c in sorted(by_method[m].items())
            if (p := c.predictions()) is not None for flag in degenerate_domains(p, split)]


def _dedup_rows(rows: list[dict[str, Any]], by_method: dict[str, dict[int, Cell]], index: dict[str, Any] | None,
                domains: list[str], warnings: list[str]) -> dict[str, Any] | None:
    """Each method row's test average re-scored without the train/test duplicates (from predictions)."""
    if index is None:
        return None
    for r in rows:
        vals = []
        for s, c in sorted(by_method.get(r["model"], {}).items()):
            p = c.predictions()
            try:
                vals.append(dedup_average(p, index, domains) if p is not None else None)
            except (KeyError, ValueError) as e:
                warnings.append(f"{r['model']} seed {s}: not re-scored without duplicates ({e})")
                vals.append(None)
        if vals and None not in vals:
            r["test_dedup"] = summarize(vals)
    return {k: index[k] for k in ("removed", "of", "how") if k in index}


def build_slices(cells: list[Cell], *, compare: Sequence[tuple[str, str]] = DEFAULT_COMPARE, split: str = "test",
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0, spec: dict[str, Any] | None = None,
                 duplicates_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One summary dict per (dataset, fraction, student), sorted by that key. `spec`: the grid spec
    whose registered phases mark comparisons (and add theirs to `compare`); `duplicates_dir`: the
    duplicate indices (duplicates.py)."""
    phases = registered_phases(resolve(spec, dev_of_cells(cells))[0] if spec else None)  # chosen phases read as their method
    compare = registered_compare(phases, compare)
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
        duplicates = (_dedup_rows(rows, by_method, load_index(duplicates_dir, key[0], key[1]), domains, warnings)
                      if split == "test" else None)
        comparisons = [_compare(by_method, a, b, domains, split, n_boot, seed, warnings)
                       for a, b in compare if a in by_method and b in by_method]
        finished = {(m, s) for m, runs in by_method.items() for s in runs}
        for c in comparisons:
            c["registration"] = registration(phases, key, c["a"], c["b"], finished, len(c["seeds"]))
        degenerate = _degenerate(by_method, split)
        for r in rows:
            r["degenerate"] = dict(Counter(f["domain"] for f in degenerate if f["method"] == r["model"]))
        slices.append({
            "dataset": key[0], "fraction": key[1], "student": key[2], "split": split, "domains": domains,
            "rows": rows, "duplicates": duplicates, "degenerate": degenerate,
            "comparisons": comparisons,
            "incomplete_seeds": {m: s for m, s in incomplete.items() if s},
            "compression": summarize_compression({m: by_method[m] for m in methods}),
            "domain_weights": slice_weights(by_method, methods, domains, split),
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


def _reported_roots(summary: dict[str, Any], json_dir: Path) -> set[Path]:
    """The grid roots a written summary.json was made from (relative to its directory; older
    summaries name them, absolute, in `grid`)."""
    if isinstance(summary.get("roots"), list):
        return {(json_dir / r).resolve() for r in summary["roots"]}
    return {Path(r).resolve() for r in str(summary.get("grid", "")).split(", ") if Path(r).is_absolute()}


def _remove_dropped_slices(json_dir: Path, keep: set[str], roots: list[Path]) -> None:
    """A slice the last report wrote and this one does not (a legacy summary its rerun replaced)
    leaves no stale JSON or chart behind; only files the last summary.json names are touched, and
    only when that report read the same grid: another grid's report in the same folder removes nothing."""
    try:
        last = _read_json(json_dir / "summary.json")
        before = {slice_slug(sl) for sl in last["slices"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable last summary: nothing is known to be stale
    if not _reported_roots(last, json_dir) & {Path(r).resolve() for r in roots}:
        return
    for slug in before - keep:
        for ext in (".json", ".png"):
            (json_dir / f"{slug}{ext}").unlink(missing_ok=True)


def write_results(grid_dir: str | Path | Sequence[str | Path], md_path: str | Path = "docs/RESULTS.md",
                  json_dir: str | Path = "docs/results", *, compare: Sequence[tuple[str, str]] = DEFAULT_COMPARE,
                  n_boot: int = DEFAULT_N_BOOT, seed: int = 0, charts: bool = True, intro: str = "",
                  legacy_dir: str | Path | None = None, spec: dict[str, Any] | None = None,
                  duplicates_dir: str | Path | None = None, source: str | None = None) -> dict[str, Any]:
    """Scan (one grid root, or several holding the same grid: live directory and archive),
    summarise, write RESULTS.md, one JSON (and PNG) per slice and summary.json; returns the summary.
    `source`: how RESULTS.md names the roots (default: their paths as given)."""
    md_path, json_dir = Path(md_path), Path(json_dir)
    roots = [grid_dir] if isinstance(grid_dir, (str, Path)) else list(grid_dir)
    cells, missing = scan_grids(roots)
    slices = merge_legacy(build_slices(cells, compare=compare, n_boot=n_boot, seed=seed, spec=spec, duplicates_dir=duplicates_dir),
                          load_legacy_slices(legacy_dir))
    _remove_dropped_slices(json_dir, {slice_slug(sl) for sl in slices}, [Path(r) for r in roots])
    links: dict[str, str] = {}
    for sl in slices:
        slug = slice_slug(sl)
        atomic_write_json(json_dir / f"{slug}.json", sl)
        if charts:
            png = json_dir / f"{slug}.png"
            plot_slice(sl, png)
            links[slug] = os.path.relpath(png.resolve(), md_path.parent.resolve())
    source = source if source is not None else ", ".join(str(r) for r in roots)
    json_dir.mkdir(parents=True, exist_ok=True)
    choices = choice_summary(spec, dev_of_cells(cells)) if spec else []
    summary = {"grid": source, "roots": [os.path.relpath(Path(r).resolve(), json_dir.resolve()) for r in roots],
               "slices": slices, "missing": missing, "choices": choices}
    atomic_write_json(json_dir / "summary.json", summary)
    atomic_write_text(md_path, render_markdown(slices, missing, links, source=source, intro=intro, choices=choices))
    return summary
