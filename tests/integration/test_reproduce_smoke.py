"""tools/reproduce.py --smoke: the grid's code path end to end on the shipped sample, then a rerun
that skips every finished cell."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from integration_helpers import REPO, child_env

pytestmark = pytest.mark.multiprocess


def _reproduce(out, *extra):
    return subprocess.run([sys.executable, "tools/reproduce.py", "--smoke", "--out", str(out), *extra], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=900)


def test_smoke_grid_then_rerun_skips_finished_cells(tmp_path):
    out = tmp_path / "grid"
    first = _reproduce(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ran = [line.split()[-1] for line in first.stdout.splitlines() if line.startswith("[run ]")]
    assert len(ran) == 8, first.stdout  # teacher, general stage, 2 students x 3 methods
    for student in ("L3", "L4H192"):
        for method in ("none", "kd", "hrkd"):
            cell = out / "amazon" / "f1.0" / student / method / "s1"
            results = json.loads((cell / "results.json").read_text())
            assert results["student"]["method"] == method
            comp = results["student"]["compression"]
            assert comp["student"]["params"] < comp["teacher"]["params"] and comp["accuracy"]["retained_pct"] > 0
            assert (cell / "student" / "predictions.json").is_file() and (cell / "cell.json").is_file()
            assert re.search(r"^# code ([0-9a-f]{40}(\+dirty)?|unknown .*), ", (cell / "train.log").read_text(), re.M)
    md = (out / "RESULTS.md").read_text()
    assert "student L3" in md and "student L4H192" in md and "hrkd − kd" in md
    assert (out / "results" / "amazon-frac1-L3.png").is_file()

    again = _reproduce(out)
    assert again.returncode == 0, again.stdout[-2000:]
    assert "[run ]" not in again.stdout, again.stdout  # every cell was finished: nothing reruns
    listed = _reproduce(out, "--list")
    assert "8/8 cells done" in listed.stdout
