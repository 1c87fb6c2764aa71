"""The all_gather_into_tensor FutureWarning is filtered, other warnings still reach the console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, warnings, torch
from hrkd_ds.engine.distributed import init_distributed, silence_known_warnings
if sys.argv[1] == "filter":
    silence_known_warnings()
init_distributed()
import deepspeed.comm as dist
out = torch.zeros(2)
dist.all_gather_into_tensor(out, torch.ones(2))
warnings.warn("a real deprecation", FutureWarning)
"""


@pytest.mark.parametrize("mode", ["filter", "none"])
def test_only_the_known_warning_is_filtered(mode):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "a real deprecation" in res.stderr
    assert ("all_gather_into_tensor` is deprecated" in res.stderr) == (mode == "none")
