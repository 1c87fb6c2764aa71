"""tools/bench_big_teacher.py: the planner's refusal starts nothing, bad input is one line, the
cached teacher export is checked, and a tiny 2-rank run prints its per-rank table (the measured
numbers themselves are in docs/BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/bench_big_teacher.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_unpartitioned_copies_are_refused_with_one_line(tmp_path):
    """Four whole copies of a 6.7B-parameter teacher (27 GB each): refused, exit 2, no export written."""
    res = _run("--layers", "32", "--hidden", "4096", "--ranks", "4", "--teacher-stage", "0", "--cache", str(tmp_path / "c"))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_big_teacher: refused: the planner predicts"), res.stdout
    assert "teacher stage 0" in lines[0] and not (tmp_path / "c").exists()


def test_refusal_follows_the_planner():
    bench = _tool("bench_big_teacher")
    a = bench.build_parser().parse_args(["--layers", "2", "--hidden", "64", "--vocab", "500", "--student", "2x32x64"])
    parts = bench.P.plan(bench.plan_args(a))
    assert bench.refusal(a, parts) is None  # a few MiB per rank fits any machine this runs on
    a.headroom_gib = bench.mem_available() / 2**30  # nothing left beyond the headroom
    assert bench.refusal(a, parts).startswith("bench_big_teacher: refused:")


def test_bad_input_names_the_field():
    res = _run("--ranks", "0")
    assert res.returncode == 2 and res.stderr.strip() == "bench_big_teacher: ranks: must be positive, got 0"


def test_cached_export_is_checked(tmp_path):
    rt = _tool("random_teacher")
    cfg = rt.teacher_config(1, 32, 64, 100, 16, 2, 2)
    params, reused = rt.ensure(tmp_path, cfg)
    assert not reused and params == json.loads((tmp_path / rt.MANIFEST).read_text())["params"]
    assert rt.ensure(tmp_path, cfg) == (params, True)
    shard = next(tmp_path.glob("*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert not rt.is_valid(tmp_path, cfg)  # a damaged shard is rewritten, not reused
    assert rt.ensure(tmp_path, cfg) == (params, False) and rt.is_valid(tmp_path, cfg)


@pytest.mark.multiprocess
def test_tiny_two_rank_run(tmp_path):
    records = tmp_path / "records.json"
    res = _run("--layers", "2", "--hidden", "64", "--vocab", "500", "--student", "2x32x64", "--ranks", "2", "--steps", "2",
               "--seq", "16", "--headroom-gib", "0.5", "--cache", str(tmp_path / "c"), "--records", str(records), timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"worst_teacher_bytes_vs_ideal: (\d+\.\d+) peak_rss_vs_full_teacher: (\d+\.\d+)", last)
    assert m and float(m.group(1)) <= 1.1, last
    ranks = json.loads(records.read_text())["records"]
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert abs(r["held_bytes"] - r["full_bytes"] / 2) / (r["full_bytes"] / 2) < 0.1
        assert len(r["step_s"]) == 2 and r["peak_rss_bytes"] >= r["fixed_rss_bytes"] > 0
