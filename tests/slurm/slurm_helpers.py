"""Helpers for the Slurm tests (a module of its own: two conftest.py files share one module name)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from slurm_cluster import Cluster, SlurmUnavailable  # noqa: E402,F401

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}


class SlurmHelper:
    """sbatch/scontrol wrappers around one cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def env(self, **extra: str) -> dict[str, str]:
        env = self.cluster.env
        env.update(WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def sbatch(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
        res = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=timeout)
        assert res.returncode == 0, f"sbatch failed: {res.stdout}{res.stderr}"
        return res.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        res = self.cluster.run(["scontrol", "show", "job", "-o", job_id], check=False, timeout=20)
        return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", res.stdout))

    def wait_job(self, job_id: str, timeout: float, logs: "callable | None" = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in TERMINAL:
                return info
            time.sleep(1)
        self.cluster.run(["scancel", job_id], check=False)
        pytest.fail(f"job {job_id} not finished after {timeout:.0f}s: {info}\n{logs() if logs else ''}")

    def wait_for(self, predicate, timeout: float, what: str, logs=None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.3)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs() if logs else ''}")


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written right now
    return rows


def dump_logs(*paths: Path) -> str:
    """Tails of every log under the given files/dirs, for assertion messages."""
    out = []
    for p in paths:
        files = sorted(p.rglob("*.log")) + sorted(p.rglob("*.out")) if p.is_dir() else [p]
        for f in files:
            try:
                text = f.read_text(errors="replace").splitlines()[-40:]
            except OSError:
                continue
            out.append(f"--- {f}\n" + "\n".join(text))
    return "\n".join(out)
