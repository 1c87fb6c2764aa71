"""tools/reproduce.py --report on another archive writes where it is told and leaves the project's
docs/ and README's generated tables alone (it once rewrote docs/RESULTS.md and deleted the other
slices' files)."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import pytest

from hrkd_ds.analysis.results import write_results
from hrkd_ds.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]


def _docs_state() -> dict[str, str]:
    files = [REPO / "README.md", REPO / "docs" / "RESULTS.md", *sorted((REPO / "docs" / "results").glob("*.*"))]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _cell(root: Path, student: str, method: str, seed: int) -> None:
    cell = root / "amazon" / "f1.0" / student / method / f"s{seed}"
    label = [0, 1] * 10
    pred = label[:-2] + [1 - y for y in label[-2:]] if method == "kd" else label[:-1] + [1 - label[-1]]
    acc = sum(p == y for p, y in zip(pred, label)) / len(label)
    atomic_write_json(cell / "cell.json", {"dataset": "amazon", "fraction": 1.0, "method": method, "seed": seed,
                                           "student": student, "run_dir": "."})
    atomic_write_json(cell / "student" / "predictions.json", {"test": {"books": {"pred": pred, "label": label}}})
    atomic_write_json(cell / "results.json", {"student": {"method": method, "test": {"books": acc, "average": acc},
                                                          "dev": {"books": acc, "average": acc}}})


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(str(REPO / "tools" / "reproduce.py"), run_name="reproduce")


def test_another_archive_reports_beside_itself_or_where_told_never_into_docs(tool, tmp_path):
    archive, grid = tmp_path / "mine-archive", tmp_path / "mine"
    for m in ("kd", "hrkd"):
        _cell(archive, "L9", m, 1)
    before = _docs_state()
    assert tool["main"](["--report", "--archive", str(archive), "--out", str(grid)]) == 0
    beside = tmp_path / "mine-archive-report"
    summary = json.loads((beside / "results" / "summary.json").read_text())
    assert [s["student"] for s in summary["slices"]] == ["L9"] and (beside / "RESULTS.md").is_file()
    assert "student L9" in (beside / "RESULTS.md").read_text()
    assert tool["main"](["--report", "--archive", str(archive), "--out", str(grid), "--report-dir", str(tmp_path / "told")]) == 0
    assert (tmp_path / "told" / "RESULTS.md").is_file() and (tmp_path / "told" / "results" / "amazon-frac1-L9.json").is_file()
    with pytest.raises(SystemExit) as exit_:
        tool["main"](["--report", "--archive", str(archive), "--out", str(grid), "--report-dir", str(REPO / "docs")])
    assert exit_.value.code == 2
    assert _docs_state() == before  # docs/RESULTS.md and docs/results/* untouched throughout


def test_only_the_projects_archive_reports_into_docs(tool, tmp_path):
    md, json_dir, own = tool["report_paths"](tmp_path / "grid", tool["ARCHIVE"], False, None)
    assert (md, json_dir, own) == (REPO / "docs" / "RESULTS.md", REPO / "docs" / "results", True)
    md, json_dir, own = tool["report_paths"](tmp_path / "grid", tool["ARCHIVE"], True, None)  # --smoke: its grid directory
    assert (md, json_dir, own) == (tmp_path / "grid" / "RESULTS.md", tmp_path / "grid" / "results", False)


def test_a_report_of_another_grid_in_the_same_folder_deletes_nothing_of_the_first(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for m in ("kd", "hrkd"):
        _cell(a, "L1", m, 1)
        _cell(b, "L2", m, 1)
    write_results(a, out / "A.md", out, n_boot=50, charts=True)
    write_results(b, out / "B.md", out, n_boot=50, charts=True)  # b's report does not know a's slice: keeps it
    assert (out / "amazon-frac1-L1.json").is_file() and (out / "amazon-frac1-L1.png").is_file()
    write_results(a, out / "A.md", out, n_boot=50, charts=True)
    # the same grid again with its slice gone: that one is stale and goes; b's stays
    for m in ("kd", "hrkd"):
        (a / "amazon" / "f1.0" / "L1" / m / "s1" / "results.json").unlink()
    _cell(a, "L3", "kd", 1)
    write_results(a, out / "A.md", out, n_boot=50, charts=False)
    assert not (out / "amazon-frac1-L1.json").exists() and not (out / "amazon-frac1-L1.png").exists()
    assert (out / "amazon-frac1-L2.json").is_file() and (out / "amazon-frac1-L3.json").is_file()
