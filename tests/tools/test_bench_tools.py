"""The benchmark scripts run end to end at tiny shapes and print their headline line (their numbers
are measured by hand in a quiet window, docs/BENCHMARKS.md; here only that the tools work)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = ["--seq", "16", "--heads", "2", "--student-layers", "2", "--teacher-layers", "4", "--student-hidden", "32",
        "--teacher-hidden", "64", "--repeats", "1"]


def _run(*args: str) -> str:
    res = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def test_bench_loss_tiny():
    out = _run("tools/bench_loss.py", *TINY)
    assert re.search(r"^fused_speedup_vs_loop: \d+\.\d+$", out.strip().splitlines()[-1])
    assert "att+hid terms, fused" in out


def test_bench_step_tiny():
    out = _run("tools/bench_step.py", "--teacher-layers", "2", "--teacher-hidden", "128", "--student-layers", "2",
               "--student-hidden", "64", "--student-heads", "2", "--student-intermediate", "128", "--seq", "16",
               "--vocab", "500", "--repeats", "1", "--no-forward",
               "--variants", "plain,zero2,zero2/t-zero3,zero2/t-zero3-bf16,zero2/t-zero3-padded,reference")
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"engine_overhead_pct: -?\d+\.\d speedup_vs_reference_style: \d+\.\d\d", last), last
    assert "bf16 teacher vs fp32" in out
    ratio = r"\d+\.\d\d \(rounds \d+\.\d\d-\d+\.\d\d\)"
    assert re.search(rf"^bf16_teacher_speedup_vs_reference_style: {ratio}$", out, re.M)
    assert re.search(rf"^padded_speedup_vs_reference_style: {ratio}$", out, re.M)
    assert re.search(rf"^speedup_vs_reference_style: reference / zero2/t-zero3 = {ratio}$", out, re.M)


def test_padding_stats_on_the_shipped_sample():
    out = _run("tools/padding_stats.py", "--rows", "20", "--episodes", "20", "--max-seq-len", "64")
    m = re.search(r"^amazon: .*mean padded row (\d+\.\d); padded_vs_real: (\d+\.\d\d)$", out, re.M)
    assert m, out
    assert float(m.group(1)) <= 64 and float(m.group(2)) >= 1.0


def test_step_ratios_pair_variants_within_a_round():
    """Load in round 3 slows both variants, in round 2 only ours: the paired median stays 2, while
    the ratio of the two medians would read 0.67."""
    sys.path.insert(0, str(REPO / "tools"))
    from bench_step import paired_ratio

    times = {"ref": [2.0, 2.0, 6.0], "ours": [1.0, 3.0, 3.0]}
    assert paired_ratio(times, "ref", "ours") == (2.0, 2.0 / 3.0, 2.0)
