"""hrkd-plan starts nothing heavy: the planner and its inputs (a run's YAML and DeepSpeed JSONs
included) are read without importing torch, so tools/bench_big_teacher.py refuses a run that
does not fit before any model is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_planning_a_run_config_imports_no_torch():
    code = ("import sys; from hrkd_ds import plan; parts = plan.plan(plan.parse(['--config', 'configs/default.yaml'])); "
            "assert parts['total'] > 0; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
