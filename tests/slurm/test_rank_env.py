"""slurm/launch_rank.sh exports the launcher variables hrkd_ds.engine.distributed.SLURM_TO_TORCH
derives from a Slurm task's environment: the script runs (no cluster needed) and prints its env."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hrkd_ds.engine.distributed import SLURM_TO_TORCH, torch_env_from_slurm

REPO = Path(__file__).resolve().parents[2]
TASK = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2"}


def launched_env(slurm: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in SLURM_TO_TORCH}
    env.update(slurm, MASTER_ADDR="127.0.0.1", MASTER_PORT="1234", REPO_DIR=str(REPO), DS_ACCELERATOR="cpu")
    res = subprocess.run([str(REPO / "slurm" / "launch_rank.sh"), "env", "-0"], env=env, capture_output=True,
                         timeout=30, check=True)
    pairs = (item.split(b"=", 1) for item in res.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.parametrize("per_node", ["4", "2(x3)", None])
def test_launch_rank_exports_what_the_python_mapping_derives(per_node):
    slurm = {**TASK, **({"SLURM_NTASKS_PER_NODE": per_node} if per_node else {})}
    want = torch_env_from_slurm(slurm)
    got = launched_env(slurm)
    assert {k: got.get(k) for k in SLURM_TO_TORCH} == {k: want.get(k) for k in SLURM_TO_TORCH}
    assert want["RANK"] == "5" and want["WORLD_SIZE"] == "8" and want["LOCAL_RANK"] == "1" and want["NODE_RANK"] == "2"
    assert ("LOCAL_WORLD_SIZE" in want) == (per_node == "4")


def test_outside_a_slurm_task_nothing_is_mapped():
    assert torch_env_from_slurm({"SLURM_NTASKS": "2"}) == {}
