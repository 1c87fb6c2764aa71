"""Verified checkpoints with real DeepSpeed engines (CPU, ZeRO-2): damage falls back or stops in one line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "scripts" / "ckpt_worker.py"


def _run(out: Path, mode: str, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), mode]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
               "--master_port", str(port), str(WORKER), str(out), mode]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt1")
    _run(out, "save")
    return out


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    return out


def _loaded(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f"loaded.rank{rank}.json").read_text())


def test_intact_latest_resumes_weights_and_rng_without_pickle(saved, tmp_path):
    out = _copy(saved, tmp_path)
    tag = out / "checkpoints" / "step00000003"
    assert (out / "checkpoints" / "LATEST").read_text() == tag.name and not list(tag.glob("*rng*.pt"))
    _run(out, "load")
    row = _loaded(out)
    assert row["step"] == 3 and row["params"] == json.loads((out / "params_step3.json").read_text())
    assert row["rng"] == json.loads((out / "rng_after_save.rank0.json").read_text())


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_latest_falls_back_to_previous(saved, tmp_path, damage):
    out = _copy(saved, tmp_path)
    victim = out / "checkpoints" / "step00000003" / "mp_rank_00_model_states.pt"
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        victim.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        victim.unlink()
    res = _run(out, "load")
    row = _loaded(out)
    assert row["step"] == 2 and row["params"] == json.loads((out / "params_step2.json").read_text())
    assert "checkpoint step00000003 is damaged" in res.stderr and "mp_rank_00_model_states.pt" in res.stderr
    assert (out / "checkpoints" / "damaged-step00000003").is_dir() and not (out / "checkpoints" / "step00000003").exists()


def test_nothing_intact_is_one_user_error(saved, tmp_path):
    out = _copy(saved, tmp_path)
    for tag in ("step00000002", "step00000003"):
        (out / "checkpoints" / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"garbage")
    _run(out, "load")
    err = _loaded(out)["error"]
    assert "no intact checkpoint left in" in err and "step00000002" in err and "\n" not in err


def test_save_interrupted_before_manifest_is_not_resumed(saved, tmp_path):
    """A kill between DeepSpeed's files and the manifest: LATEST still names the last complete tag,
    and a manifest-less newer tag is never loaded."""
    out = _copy(saved, tmp_path)
    ckpt = out / "checkpoints"
    partial = ckpt / "step00000004"
    shutil.copytree(ckpt / "step00000003", partial)
    (partial / "MANIFEST.json").unlink()
    assert (ckpt / "LATEST").read_text() == "step00000003"
    _run(out, "load")
    assert _loaded(out)["step"] == 3


def test_kill_during_the_first_save_restarts_the_stage(saved, tmp_path):
    """No LATEST yet and one manifest-less tag (the grid met this): a fresh start, not an error."""
    out = _copy(saved, tmp_path)
    ckpt = out / "checkpoints"
    shutil.rmtree(ckpt / "step00000003")
    (ckpt / "LATEST").unlink()
    (ckpt / "step00000002" / "MANIFEST.json").unlink()
    res = _run(out, "load")
    assert _loaded(out)["step"] is None
    assert "step00000002 is a save that never finished" in res.stderr and not list(ckpt.glob("*step*"))


def test_latest_without_manifest_still_stops(saved, tmp_path):
    """LATEST names tags only after their manifest: one without it is not an interrupted save."""
    out = _copy(saved, tmp_path)
    ckpt = out / "checkpoints"
    for tag in ("step00000002", "step00000003"):
        (ckpt / tag / "MANIFEST.json").unlink()
    _run(out, "load")
    err = _loaded(out)["error"]
    assert "no intact checkpoint left in" in err and "step00000003: no MANIFEST.json" in err
    assert (ckpt / "damaged-step00000003").is_dir()


def test_two_ranks_fall_back_together(tmp_path):
    out = tmp_path / "run2"
    out.mkdir()
    _run(out, "save", nproc=2)
    tag = out / "checkpoints" / "step00000003"
    assert sorted(p.name for p in tag.glob("rng_rank*.npz")) == ["rng_rank0.npz", "rng_rank1.npz"]
    optim = tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    optim.write_bytes(optim.read_bytes()[:100])
    res = _run(out, "load", nproc=2)
    rows = [_loaded(out, r) for r in (0, 1)]
    assert [r["step"] for r in rows] == [2, 2] and rows[0]["params"] == json.loads((out / "params_step2.json").read_text())
    assert res.stderr.count("is damaged") == 1
