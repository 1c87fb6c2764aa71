"""A constructed grid with known answers, shared by the report's tests (test_results*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DOMAINS = ("books", "dvd")
N_TEST = 50  # per domain: accuracies are multiples of 1/50


def _preds(correct: dict[str, int], seed: int) -> dict:
    """Predictions with exactly `correct[d]` right answers per domain (labels fixed by the split)."""
    out = {}
    for k, d in enumerate(DOMAINS):
        label = np.random.default_rng(100 + k).integers(0, 2, N_TEST)  # same split order in every run
        right = np.zeros(N_TEST, bool)
        right[np.random.default_rng(seed).permutation(N_TEST)[: correct[d]]] = True
        out[d] = {"pred": np.where(right, label, 1 - label).tolist(), "label": label.tolist()}
    return {"test": out, "dev": out}


def _acc(correct: dict[str, int]) -> dict[str, float]:
    acc = {d: correct[d] / N_TEST for d in DOMAINS}
    acc["average"] = sum(acc.values()) / len(DOMAINS)
    return acc


def _write_cell(root: Path, name: str, meta: dict, student: dict[str, int] | None, teacher: dict[str, int] | None,
                preds: bool = True, run_sub: str | None = None) -> None:
    cell = root / name
    cell.mkdir(parents=True)
    if run_sub:
        meta = {**meta, "run_dir": run_sub}
    (cell / "cell.json").write_text(json.dumps(meta))
    run = cell / (run_sub or ".")
    run.mkdir(parents=True, exist_ok=True)
    results = {}
    if teacher is not None:
        results["teacher"] = {"dev": _acc(teacher), "test": _acc(teacher)}
    if student is not None:
        results["student"] = {"dev": _acc(student), "test": _acc(student), "method": meta.get("method")}
        if preds:
            (run / "student").mkdir()
            (run / "student" / "predictions.json").write_text(json.dumps(_preds(student, hash((name, 7)) % 1000)))
    if results:
        (run / "results.json").write_text(json.dumps(results))


def make_grid(tmp_path: Path):
    """Slice A (amazon, 0.1, L4): teacher + none/kd/hrkd x seeds 1-3, kd seed 3 unfinished.
    Slice B (amazon, 1.0, L4): kd and hrkd seed 1, hrkd without predictions. Plus broken cells."""
    rng = np.random.default_rng(0)
    root = tmp_path / "grid"
    expected: dict = {"A": {}, "B": {}}
    teachers = {s: {d: int(rng.integers(42, 49)) for d in DOMAINS} for s in (1, 2, 3)}
    expected["A"]["teacher"] = [teachers[s] for s in (1, 2, 3)]
    for m, base in (("none", 30), ("kd", 35), ("hrkd", 38)):
        expected["A"][m] = []
        for s in (1, 2, 3):
            meta = {"dataset": "amazon", "fraction": 0.1, "method": m, "seed": s, "student": "L4", "teacher": f"t{s}"}
            if m == "kd" and s == 3:
                _write_cell(root, f"a-{m}-{s}", meta, None, teachers[s])  # teacher done, student unfinished
                continue
            st = {d: int(rng.integers(base, base + 8)) for d in DOMAINS}
            expected["A"][m].append(st)
            _write_cell(root, f"a-{m}-{s}", meta, st, teachers[s], run_sub="out" if m == "none" else None)
    for m, st in (("kd", {"books": 40, "dvd": 41}), ("hrkd", {"books": 43, "dvd": 44})):
        meta = {"dataset": "amazon", "fraction": 1.0, "method": m, "seed": 1, "student": "L4"}
        _write_cell(root, f"b-{m}-1", meta, st, {"books": 47, "dvd": 48}, preds=(m == "kd"))
        expected["B"][m] = [st]
    _write_cell(root, "broken", {"dataset": "amazon", "seed": 9}, None, None)
    _write_cell(root, "nested/a-hrkd-4", {"dataset": "amazon", "fraction": 0.1, "method": "hrkd", "seed": 4, "student": "L4"},
                None, None)
    return root, expected
