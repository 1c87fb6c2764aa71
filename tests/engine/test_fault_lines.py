"""The trainer's entry point turns a fault met anywhere into its one line (train.as_stop): which
errors are a collective timeout, which a full disk, and what the line then names."""

from __future__ import annotations

import errno

import pytest
import torch

from hrkd_ds.config import Config
from hrkd_ds.engine import hang
from hrkd_ds.engine.distributed import DistInfo
from hrkd_ds.engine.where import NOW
from hrkd_ds.errors import EXIT_COLLECTIVE_TIMEOUT, EXIT_DISK_FULL, UserError
from hrkd_ds.train import as_stop

GLOO = "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms for recv operation to complete"


@pytest.mark.parametrize("exc,timeout", [
    (RuntimeError(GLOO), True), (RuntimeError("Application timeout caused pair closure"), True),
    (torch.distributed.DistBackendError("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=5)"), True),
    (torch.distributed.DistStoreError("Socket Timeout"), True),
    (RuntimeError("DataLoader timed out after 5 seconds"), False), (TimeoutError("read timed out"), False),
    (RuntimeError("Connection closed by peer [127.0.0.1]:4242"), False),
])
def test_what_counts_as_a_collective_timeout(exc, timeout):
    assert hang.is_collective_timeout(exc) is timeout


def test_a_timeout_names_stage_step_and_setting():
    NOW.enter_stage("distill")
    NOW.step = 17
    cfg = Config()
    cfg.train.collective_timeout_s = 42.0
    stop = as_stop(RuntimeError(GLOO), cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    assert stop.code == EXIT_COLLECTIVE_TIMEOUT and not stop.together and "\n" not in stop.message
    assert "stage distill, step 17 on rank 0" in stop.message and "train.collective_timeout_s=42" in stop.message


def test_a_full_disk_outside_a_checkpoint_names_the_directory(tmp_path):
    NOW.enter_stage("teacher")
    cfg = Config()
    cfg.output_dir = str(tmp_path / "run")
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    stop = as_stop(err, cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    assert stop.code == EXIT_DISK_FULL and not stop.together
    assert f"for a write in {tmp_path}:" in stop.message and "bytes) free" in stop.message, stop.message
    NOW.start_writing("the student export", 1234)
    stop = as_stop(OSError(errno.ENOSPC, "No space left on device"), cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    assert f"for the student export in {cfg.output_dir}: it needs about 1.2 KiB (1234 bytes)" in stop.message, stop.message
    NOW.enter_stage("teacher")


def test_other_errors_are_left_alone():
    cfg = Config()
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    assert as_stop(UserError("config field 'x': bad; Timed out waiting 1 ms for recv operation"), cfg, dist) is None
    assert as_stop(ValueError("boom"), cfg, dist) is None
