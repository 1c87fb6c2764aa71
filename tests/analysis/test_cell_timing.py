"""What a grid cell cost (analysis/cell_timing.py): attempts summed once the last one finished,
the CPU time of the child counted, and the compression table's cost column."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hrkd_ds.analysis.cell_timing import TIMING_FILE, cell_cost, record_attempt, timed
from hrkd_ds.analysis.compression_summary import render_compression, summarize_compression


def test_timed_counts_the_childs_cpu_and_wall():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    rc, wall, cpu = timed(lambda: subprocess.Popen([sys.executable, "-c", burn]).wait())
    assert rc == 0 and cpu >= 0.3  # the child's CPU is counted (getrusage of the reaped child)
    assert wall + 0.05 >= cpu  # one busy thread: its CPU time cannot run ahead of the wall clock


def test_attempts_accumulate_and_count_only_once_the_last_one_finished(tmp_path):
    record_attempt(tmp_path, started="t0", code="abc", rc=3, wall_s=100.0, cpu_s=150.0)  # stopped at a checkpoint
    timing = json.loads((tmp_path / TIMING_FILE).read_text())
    assert cell_cost(timing) is None  # still running: no cost yet
    record_attempt(tmp_path, started="t1", code="abc", rc=0, wall_s=50.0, cpu_s=90.0)
    timing = json.loads((tmp_path / TIMING_FILE).read_text())
    assert [a["started"] for a in timing["attempts"]] == ["t0", "t1"]
    assert cell_cost(timing) == {"wall_s": 150.0, "cpu_s": 240.0, "attempts": 2}


@pytest.mark.parametrize("bad", [None, {}, {"attempts": []}, {"attempts": [{"rc": 0}]}, "text"])
def test_a_malformed_record_has_no_cost(bad):
    assert cell_cost(bad) is None


def test_an_unreadable_record_starts_over(tmp_path):
    (tmp_path / TIMING_FILE).write_text("{not json")
    record_attempt(tmp_path, started="t", code="c", rc=0, wall_s=1.0, cpu_s=2.0)
    assert cell_cost(json.loads((tmp_path / TIMING_FILE).read_text()))["attempts"] == 1


def _cell(cpu_s: float | None):
    rep = {"student": {"params": 10, "size_bytes": 2**20, "latency_ms": {"1": 1.0, "32": 8.0}},
           "teacher": {"params": 40, "size_bytes": 4 * 2**20, "latency_ms": {"1": 3.0, "32": 24.0}},
           "speedup": {"1": 3.0, "32": 3.0}, "accuracy": None}
    timing = None if cpu_s is None else {"attempts": [{"rc": 0, "wall_s": cpu_s / 2, "cpu_s": cpu_s}]}
    return SimpleNamespace(results={"student": {"compression": rep}}, timing=lambda: timing)


def test_the_cost_column_is_the_median_over_the_timed_cells():
    (row,) = summarize_compression({"kd-aug": {1: _cell(600.0), 2: _cell(1200.0), 3: _cell(6000.0), 4: _cell(None)}})
    assert row["timed"] == 3 and row["cpu_min"] == pytest.approx(20.0) and row["wall_min"] == pytest.approx(10.0)
    assert render_compression([row])[-1].endswith("| 10 / 20 (3) |")
    (row,) = summarize_compression({"kd": {1: _cell(None)}})
    assert row["timed"] == 0 and render_compression([row])[-1].endswith("| – |")
