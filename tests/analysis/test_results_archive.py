"""The report's archive and earlier grids: archived cells rebuild the same tables without the grid,
kept summaries of lost grids show beside their reruns, domain weights survive in the archive."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrkd_ds.analysis.results import build_slices, scan_grid, write_results
from results_fakes import DOMAINS


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
