"""Protocol v2 in the report: duplicates removed, degenerate flags, pre-registration marks, unequal
seed counts, on constructed grids with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrkd_ds.analysis.duplicates import dedup_average, find_duplicates, index_path, label_digest, normalise
from hrkd_ds.analysis.grid import load_spec
from hrkd_ds.analysis.protocol import (degenerate_domains, parse_comparison, registered_compare, registered_phases,
                                       registration)
from hrkd_ds.analysis.results import build_slices, scan_grid, write_results
from hrkd_ds.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
DOMS = ("books", "dvd")
N = 20
LABELS = {d: [i % 2 for i in range(N)] for d in DOMS}


class _Raw:
    """The part of RawSplits find_duplicates reads: domains and split -> domain -> columns."""

    def __init__(self, splits):
        self.domains, self.splits = list(DOMS), splits


def _col(texts, labels, pairs=None):
    return {"text": texts, "text_pair": pairs or [""] * len(texts), "label": labels}


def test_duplicates_are_normalised_exact_matches_across_domains():
    raw = _Raw({
        "train": {"books": _col(["A great  book", "meh"], [1, 0]), "dvd": _col(["Loved it\n", "pair"], [1, 0], ["", "x"])},
        "test": {"books": _col(["a great book", "a great book!", "loved IT", "new"], [1, 1, 0, 0]),
                 "dvd": _col(["pair", "pair", "MEH"], [0, 0, 0], ["x", "y", ""])},
    })
    idx = find_duplicates(raw)
    # books: 0 (case + whitespace), 2 (seen in dvd's train, other label); "!" is not the same text
    assert idx["domains"]["books"]["indices"] == [0, 2] and idx["domains"]["books"]["same_label"] == 1
    # dvd: 0 (same text and pair); 1 has another pair; 2 is books' "meh"
    assert idx["domains"]["dvd"]["indices"] == [0, 2] and idx["domains"]["dvd"]["same_label"] == 2
    assert (idx["removed"], idx["of"]) == (4, 7)
    assert normalise("  A\t b\n\nC ") == "a b c"


def _preds(right: dict[str, list[bool]]) -> dict:
    return {"test": {d: {"pred": [y if ok else 1 - y for y, ok in zip(LABELS[d], r)], "label": LABELS[d]} for d, r in right.items()}}


def _index(dups: dict[str, list[int]]) -> dict:
    return {"split": "test", "removed": sum(map(len, dups.values())), "of": N * len(DOMS), "how": "constructed",
            "domains": {d: {"n": N, "labels_sha": label_digest(LABELS[d]), "indices": dups[d], "same_label": len(dups[d])}
                        for d in DOMS}}


def test_dedup_average_rescores_without_the_duplicates_and_refuses_another_split():
    # books: the 4 duplicates are right, 8 of the other 16 too; dvd: no duplicates, 15/20 right
    right = {"books": [True] * 4 + [True] * 8 + [False] * 8, "dvd": [True] * 15 + [False] * 5}
    idx = _index({"books": [0, 1, 2, 3], "dvd": []})
    assert dedup_average(_preds(right), idx, DOMS) == pytest.approx((8 / 16 + 15 / 20) / 2)
    other = _preds(right)
    other["test"]["dvd"]["label"] = [1 - y for y in LABELS["dvd"]]
    with pytest.raises(ValueError, match="not of the split"):
        dedup_average(other, idx, DOMS)


def _cell(root: Path, method: str, seed: int, right: dict[str, list[bool]], student: str = "L4") -> None:
    cell = root / f"{student}-{method}-{seed}"
    preds = _preds(right)
    acc = {d: float(np.mean(right[d])) for d in DOMS}
    acc["average"] = float(np.mean(list(acc.values())))
    atomic_write_json(cell / "cell.json", {"dataset": "amazon", "fraction": 1.0, "method": method, "seed": seed, "student": student})
    atomic_write_json(cell / "student" / "predictions.json", preds)
    atomic_write_json(cell / "results.json", {"student": {"test": acc, "dev": acc, "method": method}})


def _right(seed: int, p: float) -> dict[str, list[bool]]:
    rng = np.random.default_rng(seed)
    return {d: list(rng.random(N) < p) for d in DOMS}


def test_report_shows_dedup_column_degenerate_marks_and_unequal_seed_counts(tmp_path):
    root, dups = tmp_path / "grid", tmp_path / "dups"
    for s in range(1, 6):
        _cell(root, "kd", s, _right(s, 0.7))
        _cell(root, "hrkd", s, _right(10 + s, 0.8))
    for s in (1, 2, 3):  # the ablation has 3 seeds, kd 5
        _cell(root, "hrkd-nodrop", s, _right(20 + s, 0.75))
    atomic_write_json(index_path(dups, "amazon", 1.0), _index({"books": [0, 5], "dvd": [7]}))
    # kd seed 2 predicts class 1 on 19 of 20 books examples (95%): degenerate there, nowhere else
    pred = json.loads((root / "L4-kd-2" / "student" / "predictions.json").read_text())
    pred["test"]["books"]["pred"] = [1] * 19 + [0]
    atomic_write_json(root / "L4-kd-2" / "student" / "predictions.json", pred)
    res = json.loads((root / "L4-kd-2" / "results.json").read_text())
    books = float(np.mean(np.array(pred["test"]["books"]["pred"]) == np.array(LABELS["books"])))
    res["student"]["test"]["books"] = books
    res["student"]["test"]["average"] = (books + res["student"]["test"]["dvd"]) / 2
    atomic_write_json(root / "L4-kd-2" / "results.json", res)

    (sl,) = build_slices(scan_grid(root)[0], n_boot=300, seed=1, duplicates_dir=dups)
    rows = {r["model"]: r for r in sl["rows"]}
    keep = {d: np.ones(N, bool) for d in DOMS}
    keep["books"][[0, 5]] = keep["dvd"][7] = False
    for m, seeds in (("kd", range(1, 6)), ("hrkd", range(1, 6)), ("hrkd-nodrop", (1, 2, 3))):
        vals = []
        for s in seeds:
            pr = json.loads((root / f"L4-{m}-{s}" / "student" / "predictions.json").read_text())["test"]
            vals.append(np.mean([np.mean((np.array(pr[d]["pred"]) == np.array(pr[d]["label"]))[keep[d]]) for d in DOMS]))
        assert rows[m]["test_dedup"]["mean"] == pytest.approx(np.mean(vals), abs=1e-12) and rows[m]["test_dedup"]["n"] == len(vals)
    assert sl["duplicates"]["removed"] == 3 and sl["warnings"] == []
    assert sl["degenerate"] == [{"method": "kd", "seed": 2, "cell": "L4-kd-2", "domain": "books", "class": 1, "share": 0.95}]
    assert rows["kd"]["degenerate"] == {"books": 1} and rows["hrkd"]["degenerate"] == {}
    cmp = {(c["a"], c["b"]): c for c in sl["comparisons"]}
    assert cmp["hrkd", "kd"]["n"] == 5 and cmp["hrkd", "kd"]["hierarchical"]["n_seeds"] == 5
    assert cmp["hrkd-nodrop", "kd"]["seeds"] == [1, 2, 3] and cmp["hrkd-nodrop", "kd"]["hierarchical"]["n_seeds"] == 3
    assert cmp["hrkd-nodrop", "kd"]["hierarchical"]["diff"] == pytest.approx(cmp["hrkd-nodrop", "kd"]["bootstrap"]["diff"])

    write_results(root, tmp_path / "R.md", tmp_path / "r", n_boot=300, charts=False, duplicates_dir=dups)
    md = (tmp_path / "R.md").read_text()
    assert "| average, duplicates removed |" in md and "Duplicates removed: 3 of the 40 test examples" in md
    kd_line = next(line for line in md.splitlines() if line.startswith("| kd | 5 |"))
    assert kd_line.split(" | ")[2].endswith("⚑1") and "⚑" not in kd_line.split(" | ")[3]
    assert "kd s2: books 95.0% c1" in md and "- amazon 1 L4: kd s2 (1/2 domains)" in md
    assert "| hrkd-nodrop − kd | 3 [1, 2, 3] |" in md and "95% CI, seeds + examples (v2)" in md
    assert "95% CI, examples only (first protocol)" in md


def test_degenerate_threshold_is_strictly_more_than_90_percent():
    preds = {"test": {"a": {"pred": [1] * 9 + [0]}, "b": {"pred": [2] * 91 + [0] * 9}, "c": {"pred": []}}}
    assert degenerate_domains(preds) == [{"domain": "b", "class": 2, "share": 0.91}]


SPEC = {"seeds": [1, 2, 3], "preregistration": {"r1": {"seeds": 5}},
        "phases": [{"datasets": ["amazon"], "fractions": ["1.0"], "students": ["L4"], "methods": ["kd", "hrkd"]},
                   {"datasets": ["amazon"], "fractions": ["1.0"], "students": ["L4"], "methods": ["kd", "hrkd", "x-y"],
                    "seeds": [4, 5], "registered": {"date": "2026-12-07", "rule": "r1", "compare": ["hrkd - kd", "x-y - kd"]}}]}


def test_registration_needs_every_cell_of_the_registered_phase():
    phases = registered_phases(SPEC)
    assert [p["compare"] for p in phases] == [[("hrkd", "kd"), ("x-y", "kd")]]
    key = ("amazon", 1.0, "L4")
    all_cells = {(m, s) for m in ("kd", "hrkd", "x-y") for s in (1, 2, 3, 4, 5)}
    done = registration(phases, key, "hrkd", "kd", all_cells, 5)
    assert done["status"] == "pre-registered" and (done["cells_done"], done["cells_needed"]) == (6, 6)
    waiting = registration(phases, key, "hrkd", "kd", all_cells - {("x-y", 5)}, 5)
    assert waiting["status"] == "earlier protocol" and (waiting["cells_done"], waiting["cells_needed"]) == (5, 6)
    assert registration(phases, key, "hrkd", "kd", all_cells, 4)["status"] == "earlier protocol"  # rule reads 5 seeds
    assert registration(phases, key, "kd", "hrkd", all_cells, 5) == {"status": "earlier protocol"}  # not registered
    assert registration(phases, ("amazon", 0.1, "L4"), "hrkd", "kd", all_cells, 5) == {"status": "earlier protocol"}
    assert parse_comparison("hrkd-nodrop - kd") == ("hrkd-nodrop", "kd")
    with pytest.raises(ValueError):
        parse_comparison("hrkd-kd")


def test_a_registered_phase_is_named_by_what_it_runs_not_where_it_stands():
    (before,) = registered_phases(SPEC)
    inserted = {**SPEC, "phases": [SPEC["phases"][0], {"datasets": ["mnli"], "fractions": ["0.1"], "students": ["L3"],
                                                       "methods": ["none"]}, *SPEC["phases"][1:]]}
    (after,) = registered_phases(inserted)
    assert before["phase"] == after["phase"] == "amazon 1.0 L4 kd+hrkd+x-y seeds 4+5"


def test_every_registered_pair_is_read_after_the_default_ones():
    phases = registered_phases(SPEC)
    assert registered_compare(phases, [("hrkd", "kd"), ("kd", "none")]) == [("hrkd", "kd"), ("kd", "none"), ("x-y", "kd")]


def test_the_grid_spec_registers_its_v2_phases():
    phases = registered_phases(load_spec(REPO / "configs" / "reproduce" / "grid.yaml"))
    # every registered reading waits for 5 seeds, but a dev-only selection's own cells (v2-schedule), read at its seeds
    selection_seeds = lambda p: len((p["rule"].get("choose") or {}).get("seeds") or [])  # noqa: E731
    assert phases and all(p["rule"].get("seeds") == 5 or p["rule"]["seeds"] == selection_seeds(p) == len(p["seeds"])
                          for p in phases)
    assert [p["rule_name"] for p in phases if p["rule"]["seeds"] != 5] == ["v2-mix", "v2-schedule"]
    report = [p for p in phases if p["rule_name"] == "v2-report"]  # seeds 4-5 of the slices the README states
    assert report and all(p["seeds"] == [4, 5] for p in report)
    assert any(("hrkd", "kd") in p["compare"] and "amazon" in p["datasets"] and 1.0 in p["fractions"] for p in report)
    assert len({p["phase"] for p in phases}) == len(phases)  # the labels tell the phases apart


def test_report_marks_registered_comparisons(tmp_path):
    root = tmp_path / "grid"
    for s in range(1, 6):
        for m in ("kd", "hrkd", "x-y"):
            _cell(root, m, s, _right(s * 7 + len(m), 0.7))
    out = write_results(root, tmp_path / "R.md", tmp_path / "r", n_boot=100, charts=False, spec=SPEC,
                        compare=[("hrkd", "kd"), ("kd", "hrkd")])
    reg = {(c["a"], c["b"]): c["registration"]["status"] for c in out["slices"][0]["comparisons"]}
    # x-y - kd is read because the phase registers it, though `compare` does not name it
    assert reg == {("hrkd", "kd"): "pre-registered", ("kd", "hrkd"): "earlier protocol", ("x-y", "kd"): "pre-registered"}
    md = (tmp_path / "R.md").read_text()
    assert "pre-registered (r1, 2026-12-07)" in md and "| earlier protocol |" in md


@pytest.mark.skipif(not (SHARED / "amazon_review").is_dir(), reason="needs ../shared/data (the real Amazon reviews)")
def test_committed_amazon_duplicate_indices_regenerate_from_the_data(tmp_path):
    from hrkd_ds.analysis.duplicates import regenerate

    spec = load_spec(REPO / "configs" / "reproduce" / "grid.yaml")
    spec["datasets"] = {"amazon": spec["datasets"]["amazon"]}
    written = regenerate(spec, REPO, tmp_path)
    assert {p.name for p in written} == {f"amazon-f{f}.json" for f in spec["datasets"]["amazon"]["fractions"]}
    assert {"amazon-f1.0.json", "amazon-f0.1.json"} <= {p.name for p in written}
    for p in written:
        assert json.loads(p.read_text()) == json.loads((REPO / "docs" / "results" / "duplicates" / p.name).read_text())
    full = json.loads((tmp_path / "amazon-f1.0.json").read_text())
    assert (full["removed"], full["of"]) == (26, 800)
