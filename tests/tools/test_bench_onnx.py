"""tools/bench_onnx.py runs end to end at a tiny shape: every ONNX graph it times matches PyTorch
(its numbers are measured in a quiet window, docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("onnxruntime")


def test_bench_onnx_tiny(tmp_path):
    out = tmp_path / "onnx.json"
    res = subprocess.run([sys.executable, "tools/bench_onnx.py", "--shapes", "2x96", "--batch-sizes", "1,2", "--seq-len", "16",
                          "--repeats", "1", "--warmup", "0", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| 2x96 |")]
    assert len(rows) == 2 * 6  # two batch sizes x (two PyTorch paths + four ONNX graphs)
    (result,) = json.loads(out.read_text())["results"]
    assert len(result["max_abs_logit_diff"]) == 4 and max(result["max_abs_logit_diff"].values()) < 1e-4
