"""Results tables on a synthetic grid: known means/stds, pairing, missing cells, files written."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from hrkd_ds.analysis.bootstrap import pair_from_predictions, paired_bootstrap
from hrkd_ds.analysis.results import build_slices, scan_grid, slice_slug, write_results

REPO = Path(__file__).resolve().parents[2]
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


@pytest.fixture()
def grid(tmp_path):
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


def test_archive_keeps_what_the_report_needs_and_survives_the_grid(grid, tmp_path):
    """The archive (committed records of finished cells) rebuilds the same tables once the grid
    directory is gone; unfinished cells and cells without predictions are not archived."""
    import shutil

    from hrkd_ds.analysis.archive import archived, sync_archive

    root, _ = grid
    archive = tmp_path / "archive"
    added = sync_archive(root, archive)
    assert sorted(added) == sorted(["a-none-1", "a-none-2", "a-none-3", "a-kd-1", "a-kd-2", "a-hrkd-1", "a-hrkd-2",
                                    "a-hrkd-3", "b-kd-1"])  # b-hrkd-1 has no predictions, a-kd-3 is unfinished
    assert archived(archive, "a-none-1") and not archived(archive, "a-kd-3") and not archived(archive, "b-hrkd-1")
    assert json.loads((archive / "a-none-1" / "cell.json").read_text())["run_dir"] == "."
    assert sync_archive(root, archive) == []  # nothing changed: nothing rewritten
    live = write_results(root, tmp_path / "live.md", tmp_path / "live", n_boot=100, charts=False)
    both = write_results([root, archive], tmp_path / "both.md", tmp_path / "both", n_boot=100, charts=False)
    assert both["slices"] == live["slices"]  # the live grid wins where both hold a cell; same ids
    shutil.rmtree(root)
    alone = write_results([root, archive], tmp_path / "alone.md", tmp_path / "alone", n_boot=100, charts=False)
    a_live, a_alone = live["slices"][0], alone["slices"][0]
    assert a_alone["rows"] == a_live["rows"] and a_alone["comparisons"] == a_live["comparisons"]
    assert a_alone["cells"] == a_live["cells"] == sorted(a_live["cells"])
    assert alone["missing"] == []


def test_legacy_slice_is_shown_beside_its_rerun_until_the_rerun_has_as_many_cells(grid, tmp_path):
    root, _ = grid
    legacy = tmp_path / "legacy"
    cells, _ = scan_grid(root)
    a = build_slices(cells, n_boot=50)[0]
    old = {**a, "rows": a["rows"][:2], "cells": [f"/gone/{i}" for i in range(len(a["cells"]) + 1)]}
    legacy.mkdir()
    (legacy / "old.json").write_text(json.dumps(old))
    (legacy / "other.json").write_text(json.dumps({**old, "student": "L9", "cells": ["/gone/x"]}))
    out = write_results(root, tmp_path / "R.md", tmp_path / "r", n_boot=50, charts=True, legacy_dir=legacy)
    both = [s for s in out["slices"] if (s["fraction"], s["student"]) == (0.1, "L4")]
    # the partial rerun first, then the earlier grid's summary (more cells than the rerun's)
    assert [bool(s.get("legacy")) for s in both] == [False, True]
    assert both[0]["rows"] == a["rows"] and both[1]["rows"] == old["rows"]
    assert {s["student"] for s in out["slices"] if s.get("legacy")} == {"L4", "L9"}
    md = (tmp_path / "R.md").read_text()
    assert "student L4 · earlier grid" in md and "Kept from an earlier grid (old.json" in md
    slug = f"{a['dataset']}-frac0.1-L4"
    for name in (f"{slug}.json", f"{slug}-legacy.json", f"{slug}-legacy.png"):
        assert (tmp_path / "r" / name).is_file(), name
    # the rerun catches up: the summary goes, and so do its JSON and chart
    old["cells"] = old["cells"][:2]
    (legacy / "old.json").write_text(json.dumps(old))
    out = write_results(root, tmp_path / "R.md", tmp_path / "r", n_boot=50, charts=True, legacy_dir=legacy)
    assert [bool(s.get("legacy")) for s in out["slices"] if (s["fraction"], s["student"]) == (0.1, "L4")] == [False]
    assert not (tmp_path / "r" / f"{slug}-legacy.json").exists() and not (tmp_path / "r" / f"{slug}-legacy.png").exists()
    assert (tmp_path / "r" / f"{slug}.json").is_file()


def test_an_archive_inside_the_grid_is_not_archived_again(grid, tmp_path):
    """--smoke once kept its archive inside the grid directory: every sync then archived the archive."""
    from hrkd_ds.analysis.archive import sync_archive

    root, _ = grid
    inside = root / "archive"
    first = sync_archive(root, inside)
    assert first and sync_archive(root, inside) == []
    assert not any(p.name == "archive" for p in inside.rglob("*"))
    out = write_results([root, inside], tmp_path / "R.md", tmp_path / "r", n_boot=50, charts=False)
    assert all(not c.startswith("archive/") for sl in out["slices"] for c in sl["cells"])


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


def test_domain_weights_reach_the_report_and_survive_in_the_archive(grid, tmp_path):
    """An hrkd run's metrics.jsonl stays in the grid directory; the summary of its weights goes into
    the archive, so the report's weight table rebuilds without the grid. kd logs no weights: no row."""
    import shutil

    from hrkd_ds.analysis.archive import sync_archive

    root, _ = grid
    # hrkd seed s: top-level weights all on books (the smaller loss) for the first s of 4 logged
    # steps, then all on dvd: one switch per run
    for s in (1, 2, 3):
        run = root / f"a-hrkd-{s}"
        (run / "labels.json").write_text(json.dumps({"domains": list(DOMAINS)}))
        rows = []
        for step in range(4):
            top = [1.0, 0.0] if step < s else [0.0, 1.0]
            rows.append({"stage": "student", "step": step, "weights": [[0.5, 0.5], top],
                         "terms": {"emb": {"books": 1.0, "dvd": 2.0}, "att": [{"books": 1.0, "dvd": 2.0}],
                                   "hid": [{"books": 0.0, "dvd": 0.0}]}})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    archive = tmp_path / "archive"
    sync_archive(root, archive)
    assert (archive / "a-hrkd-1" / "student" / "domain_weights.json").is_file()
    assert not (archive / "a-kd-1" / "student" / "domain_weights.json").exists()
    live = write_results(root, tmp_path / "live.md", tmp_path / "live", n_boot=50, charts=False)
    w = live["slices"][0]["domain_weights"]
    assert list(w) == ["hrkd"] and w["hrkd"]["n"] == 3
    assert w["hrkd"]["entropy"] == pytest.approx(1.0)
    assert w["hrkd"]["top_entropy"] == pytest.approx(0.0, abs=1e-9) and w["hrkd"]["top_max_weight"] == 1.0
    assert w["hrkd"]["top_easiest"] == pytest.approx(np.mean([s / 4 for s in (1, 2, 3)]))
    assert w["hrkd"]["top_jump"] == pytest.approx(1 / 3)  # one change of 1 per domain over 3 intervals
    shutil.rmtree(root)
    alone = write_results([root, archive], tmp_path / "alone.md", tmp_path / "alone", n_boot=50, charts=False)
    assert alone["slices"][0]["domain_weights"] == w
    text = (tmp_path / "alone.md").read_text()
    assert "| model | n | books | dvd | average | dev average |" in text
    assert f"| hrkd (n=3) | 1.0000 | {w['hrkd']['top_entropy']:.4f} |" in text


def test_legacy_retained_is_recomputed_as_the_ratio_of_its_means(tmp_path):
    from hrkd_ds.analysis.results import load_legacy_slices

    def row(model, avg):
        return {"model": model, "test": {"average": {"mean": avg}}}

    old = {"dataset": "amazon", "fraction": 1.0, "student": "L3", "cells": ["/gone/1"],
           "rows": [row("teacher", 0.80), row("kd", 0.72)],
           "compression": [{"method": "kd", "retained_pct": 91.0}, {"method": "none", "retained_pct": 88.0}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (sl,) = load_legacy_slices(tmp_path)
    # kd from its means (0.72 / 0.80); none has no row, so its stored figure stays
    assert [c["retained_pct"] for c in sl["compression"]] == [pytest.approx(90.0), 88.0]
    assert "summary only" in sl["legacy"]
