"""Results tables on a synthetic grid: known means/stds, pairing, missing cells, files written."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from hrkd_ds.analysis.bootstrap import pair_from_predictions, paired_bootstrap
from hrkd_ds.analysis.results import build_slices, scan_grid, slice_slug, write_results
from results_fakes import DOMAINS, _acc, _write_cell

REPO = Path(__file__).resolve().parents[2]


def _check_row(row: dict, runs: list[dict[str, int]]) -> None:
    accs = [_acc(c) for c in runs]
    assert row["n"] == len(runs)
    for k in (*DOMAINS, "average"):
        vals = np.array([a[k] for a in accs])
        assert row["test"][k]["mean"] == pytest.approx(vals.mean(), abs=1e-12)
        if len(vals) > 1:
            assert row["test"][k]["std"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
        else:
            assert row["test"][k]["std"] is None


def test_slices_have_known_means_stds_and_bootstrap(grid):
    root, expected = grid
    cells, missing = scan_grid(root)
    assert sorted(m["cell"] for m in missing) == ["a-kd-3", "broken", "nested/a-hrkd-4"]
    reasons = {m["cell"]: m["reason"] for m in missing}
    assert "no student test average" in reasons["a-kd-3"]
    assert "lacks" in reasons["broken"] and "no results.json" in reasons["nested/a-hrkd-4"]
    slices = build_slices(cells, n_boot=500, seed=5)
    assert [(s["fraction"], s["student"]) for s in slices] == [(0.1, "L4"), (1.0, "L4")]
    a, b = slices
    assert a["domains"] == list(DOMAINS)
    assert [r["model"] for r in a["rows"]] == ["teacher", "none", "kd", "hrkd"]
    for row in a["rows"]:
        _check_row(row, expected["A"][row["model"]])
    assert a["incomplete_seeds"] == {"kd": [3]}
    assert a["warnings"] == []
    assert [(c["a"], c["b"]) for c in a["comparisons"]] == [("hrkd", "kd"), ("kd", "none"), ("hrkd", "none")]
    cmp = a["comparisons"][0]
    assert (cmp["a"], cmp["b"], cmp["seeds"]) == ("hrkd", "kd", [1, 2])
    pairs = [pair_from_predictions(json.loads((root / f"a-hrkd-{s}/student/predictions.json").read_text()),
                                   json.loads((root / f"a-kd-{s}/student/predictions.json").read_text()), "test", DOMAINS)
             for s in (1, 2)]
    assert cmp["bootstrap"] == paired_bootstrap(pairs, n_boot=500, seed=5).to_dict()
    exp_diff = np.mean([_acc(h)["average"] - _acc(k)["average"] for h, k in zip(expected["A"]["hrkd"][:2], expected["A"]["kd"])])
    assert cmp["bootstrap"]["diff"] == pytest.approx(exp_diff, abs=1e-12)
    # slice B: one run each (no std), hrkd has no predictions -> no interval, and a warning says why
    _check_row(next(r for r in b["rows"] if r["model"] == "hrkd"), expected["B"]["hrkd"])
    assert b["comparisons"][0]["bootstrap"] is None
    assert any("no predictions.json for hrkd" in w for w in b["warnings"])


def test_predictions_disagreeing_with_results_are_flagged(grid):
    root, _ = grid
    res_path = root / "a-kd-1" / "results.json"
    res = json.loads(res_path.read_text())
    res["student"]["test"]["books"] += 0.02
    res_path.write_text(json.dumps(res))
    cells, _ = scan_grid(root)
    a = build_slices(cells, n_boot=50)[0]
    assert any("a-kd-1: test/books accuracy from predictions" in w for w in a["warnings"])


def test_duplicate_cells_counted_once(grid):
    root, expected = grid
    import shutil

    shutil.copytree(root / "a-hrkd-1", root / "z-hrkd-1-again")
    cells, _ = scan_grid(root)
    a = build_slices(cells, n_boot=50)[0]
    assert next(r for r in a["rows"] if r["model"] == "hrkd")["n"] == 3
    assert any("duplicate hrkd seed 1: z-hrkd-1-again ignored" in w for w in a["warnings"])


def test_write_results_files(grid, tmp_path):
    root, expected = grid
    md, out = tmp_path / "docs" / "RESULTS.md", tmp_path / "docs" / "results"
    summary = write_results(root, md, out, n_boot=200)
    slugs = [slice_slug(s) for s in summary["slices"]]
    assert slugs == ["amazon-frac0.1-L4", "amazon-frac1-L4"]
    for slug, sl in zip(slugs, summary["slices"]):
        assert json.loads((out / f"{slug}.json").read_text()) == json.loads(json.dumps(sl))
        assert (out / f"{slug}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["missing"] == summary["missing"]
    text = md.read_text()
    assert "## amazon · train fraction 0.1 · student L4" in text
    assert "| model | n | books | dvd | average |" in text
    kd = [_acc(c) for c in expected["A"]["kd"]]
    books = np.array([a["books"] for a in kd])
    assert f"| kd | 2 | {100 * books.mean():.2f} ± {100 * books.std(ddof=1):.2f} |" in text
    assert "| hrkd | 1 | 86.00 | 88.00 | 87.00 |" in text  # single run: no ± part
    assert "| hrkd − kd | 2 [1, 2] | **" in text and "| P(Δ ≤ 0) |" in text  # kd has seeds 1-2 only: n = 2
    assert "- kd: no finished run for seed(s) [3]" in text
    assert "| nested/a-hrkd-4 | unfinished: no results.json |" in text
    assert "![amazon-frac0.1-L4](results/amazon-frac0.1-L4.png)" in text
    assert not list(out.glob(".*"))  # no temp files left behind


def test_tool_cli(grid, tmp_path, capsys):
    root, _ = grid
    tool = runpy.run_path(str(REPO / "tools" / "results_table.py"), run_name="results_table")
    rc = tool["main"]([str(root), "--md", str(tmp_path / "R.md"), "--out", str(tmp_path / "r"), "--n-boot", "100",
                       "--compare", "hrkd:kd", "kd:none", "--no-charts"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "10 finished cell(s) in 2 slice(s), 3 missing" in out
    sl = json.loads((tmp_path / "r" / "amazon-frac0.1-L4.json").read_text())
    assert [(c["a"], c["b"]) for c in sl["comparisons"]] == [("hrkd", "kd"), ("kd", "none")]
    assert not list((tmp_path / "r").glob("*.png"))
    assert tool["main"]([str(tmp_path / "nope")]) == 2


def test_variant_cells_take_the_grid_name_and_base_cells_must_match(tmp_path):
    """A variant cell (grid name kd-ce, trainer method kd) counts under its grid name; a base cell
    whose run trained another method does not count."""
    root = tmp_path / "g"
    meta = {"dataset": "amazon", "fraction": 1.0, "seed": 1, "student": "L3", "teacher": "t"}
    correct = {d: 40 for d in DOMAINS}
    _write_cell(root, "variant", {**meta, "method": "kd-ce"}, correct, correct)
    _write_cell(root, "base", {**meta, "method": "kd"}, correct, correct)
    for name, trained in (("variant", "kd"), ("base", "hrkd")):
        res = json.loads((root / name / "results.json").read_text())
        res["student"]["method"] = trained
        (root / name / "results.json").write_text(json.dumps(res))
    cells, missing = scan_grid(root)
    assert [c.method for c in cells] == ["kd-ce"]
    assert missing == [{"cell": "base", "reason": "cell.json says method 'kd' but results.json says 'hrkd'"}]


def test_an_ablation_is_compared_with_the_default_and_with_kd_on_the_seeds_they_share(grid):
    root, expected = grid
    st = {"books": 36, "dvd": 37}
    meta = {"dataset": "amazon", "fraction": 0.1, "method": "hrkd-nodrop", "seed": 1, "student": "L4", "teacher": "t1"}
    _write_cell(root, "a-hrkd-nodrop-1", meta, st, {"books": 45, "dvd": 46})
    a = build_slices(scan_grid(root)[0], n_boot=200, seed=1)[0]
    assert [r["model"] for r in a["rows"]] == ["teacher", "none", "kd", "hrkd", "hrkd-nodrop"]
    assert a["incomplete_seeds"] == {"kd": [3], "hrkd-nodrop": [2, 3]}
    cmp = {(c["a"], c["b"]): c for c in a["comparisons"]}
    assert list(cmp)[3:] == [("hrkd-nodrop", "hrkd"), ("hrkd-nodrop", "kd")]
    for b, runs in (("hrkd", expected["A"]["hrkd"]), ("kd", expected["A"]["kd"])):
        assert cmp["hrkd-nodrop", b]["seeds"] == [1]
        assert cmp["hrkd-nodrop", b]["bootstrap"]["diff"] == pytest.approx(_acc(st)["average"] - _acc(runs[0])["average"], abs=1e-12)
