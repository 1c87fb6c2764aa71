"""The lowest dependency versions setup.py admits really train: tools/test_lowest.sh end to end.

The script builds (once per setup.py hash, cached under ~/.cache/hrkd-ds) a clean venv with CPU
torch 2.13.0 and every other requirement pinned to its declared floor, installs the project with
--no-deps and runs a 6-step teacher + 6-step distill. Cold about 4 minutes on a 2-core CPU beside
other tests (pip downloads and the deepspeed sdist build), warm about 2 (training only).
"""

import json
import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT

INDEX_UNREACHABLE = 75  # the script's exit code when pip cannot reach the package index

pytestmark = pytest.mark.slow


def test_lowest_declared_versions_train_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WANDB_MODE")}
    env["HRKD_LOWEST_WORK"] = str(tmp_path)
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "test_lowest.sh")],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
    )
    out = "\n".join(line for line in proc.stdout.splitlines() if "is ignored: it is neither" not in line)
    if proc.returncode == INDEX_UNREACHABLE:
        pytest.skip(f"package index unreachable, lowest versions not installed: {out.strip().splitlines()[-1]}")
    assert proc.returncode == 0, out[-8000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for role in ("teacher", "student"):
        assert 0.0 <= results[role]["test"]["average"] <= 1.0
    assert "OK: lowest versions pass" in out
