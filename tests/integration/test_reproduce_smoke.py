"""tools/reproduce.py --smoke: the grid's code path end to end on the shipped sample, then a rerun
that skips every finished cell, then a new machine (empty grid directory) with only the archive."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from integration_helpers import REPO, child_env

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def _reproduce(out, *extra):
    return subprocess.run([sys.executable, "tools/reproduce.py", "--smoke", "--out", str(out), *extra], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=900)


def test_smoke_grid_then_rerun_skips_finished_cells(tmp_path):
    out = tmp_path / "grid"
    first = _reproduce(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ran = [line.split()[-1] for line in first.stdout.splitlines() if line.startswith("[run ]")]
    assert len(ran) == 9, first.stdout  # teacher, 5 methods on L3, general stage, hrkd on 2 more students
    for student, method in [("L3", "none"), ("L3", "kd"), ("L3", "hrkd"), ("L3", "logit-kd"), ("L3", "two-stage"),
                            ("L4H192", "hrkd"), ("L4H192sel", "hrkd")]:
        cell = out / "amazon" / "f1.0" / student / method / "s1"
        results = json.loads((cell / "results.json").read_text())
        assert results["student"]["method"] == method
        comp = results["student"]["compression"]
        assert comp["student"]["params"] < comp["teacher"]["params"] and comp["accuracy"]["retained_pct"] > 0
        assert (cell / "student" / "predictions.json").is_file() and (cell / "cell.json").is_file()
        assert re.search(r"^# code ([0-9a-f]{40}(\+dirty)?|unknown .*), ", (cell / "train.log").read_text(), re.M)
        (attempt,) = json.loads((cell / "timing.json").read_text())["attempts"]  # what the cell cost, archived too
        assert attempt["rc"] == 0 and attempt["cpu_s"] > 0 and attempt["wall_s"] > 0
        assert (tmp_path / "grid-archive" / cell.relative_to(out) / "timing.json").read_text() == (cell / "timing.json").read_text()
    md = (out / "RESULTS.md").read_text()
    assert "cell min, wall / CPU (timed)" in md and re.search(r"\| \d+ / \d+ \(1\) \|", md)
    assert "student L3" in md and "student L4H192\n" in md and "student L4H192sel" in md and "hrkd − kd" in md
    assert (out / "results" / "amazon-frac1-L3.png").is_file()

    again = _reproduce(out)
    assert again.returncode == 0, again.stdout[-2000:]
    assert "[run ]" not in again.stdout, again.stdout  # every cell was finished: nothing reruns
    listed = _reproduce(out, "--list")
    assert "9/9 cells done" in listed.stdout

    # a new machine: the grid directory is gone, the archive (committed in a real grid) is not
    fresh = tmp_path / "fresh"
    again = _reproduce(fresh, "--archive", str(tmp_path / "grid-archive"))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "[run ]" not in again.stdout, again.stdout  # archived students: their teacher is not needed either
    md2 = (fresh / "RESULTS.md").read_text()
    for slug in ("amazon-frac1-L3", "amazon-frac1-L4H192", "amazon-frac1-L4H192sel"):
        a, b = (json.loads((d / "results" / f"{slug}.json").read_text()) for d in (out, fresh))
        assert a["rows"] == b["rows"] and a["comparisons"] == b["comparisons"] and a["cells"] == b["cells"]
    assert "student L4H192" in md2
    listed = _reproduce(fresh, "--list", "--archive", str(tmp_path / "grid-archive"))
    assert "7/9 cells done" in listed.stdout and listed.stdout.count("unneeded") == 2, listed.stdout
