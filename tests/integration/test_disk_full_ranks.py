"""A full disk with the real trainer: on the checkpoint path (2 ranks, only rank 1's write fails)
and on the export path (1 process). Each is one line naming the directory, the bytes needed and
free, exit code 6 (not 2), LATEST and the previous checkpoint / export intact; a relaunch resumes."""

from __future__ import annotations

import json
import re

import pytest
from integration_helpers import (
    SCRIPTS, assert_ok, free_port, loss_rows, run, single_cmd, torchrun_cmd, train_args,
)

from hrkd_ds.engine import checkpoint
from hrkd_ds.errors import EXIT_DISK_FULL

pytestmark = pytest.mark.multiprocess
FAULT = str(SCRIPTS / "fault_train.py")
ARGS = ["stages=[teacher]", "teacher_train.max_steps=8", "teacher_train.save_every=2", "teacher_train.eval_every=4"]


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("hrkd_ds: error:")]


def trainer_traceback(log: str) -> bool:
    """A traceback through the trainer's code (torchrun prints its own for any failed rank)."""
    return re.search(r'File "[^"]*hrkd_ds/', log) is not None


def test_checkpoint_save_on_a_full_disk(it_root, it_cache):
    out, log = it_root / "enospc_ckpt", it_root / "enospc_ckpt.log"
    cmd = torchrun_cmd(2, free_port(), FAULT) + train_args(out, it_cache, *ARGS)
    res = run(cmd, log, env={"HRKD_TEST_ENOSPC": "checkpoint:2:1"})  # rank 1's second tag: step 4
    ckpt = out / "teacher" / "checkpoints"
    errors = error_lines(res.log)
    assert res.rc != 0 and len(errors) == 1, res.tail()
    line = errors[0]
    assert f"checkpoint step00000004 in {ckpt}:" in line and "needs about" in line and "bytes) free" in line, line
    assert "LATEST still names step00000002" in line, line
    assert f"exitcode  : {EXIT_DISK_FULL}" in res.log and not trainer_traceback(res.log), res.tail()
    assert (ckpt / "LATEST").read_text() == "step00000002" and checkpoint.verify(ckpt / "step00000002") is None
    assert not (ckpt / "step00000004").exists()  # the half-written tag is gone, not left to be resumed
    assert_ok(run(torchrun_cmd(2, free_port(), FAULT) + train_args(out, it_cache, *ARGS), log), "relaunch")
    assert sorted(r["step"] for r in loss_rows(out, "teacher")) == list(range(1, 9))


def test_export_on_a_full_disk(it_root, it_cache):
    out, log = it_root / "enospc_export", it_root / "enospc_export.log"
    cmd = single_cmd(FAULT) + train_args(out, it_cache, *ARGS)
    res = run(cmd, log, env={"HRKD_TEST_ENOSPC": "export:2"})  # the first eval's second export (a best-by-domain)
    assert res.rc == EXIT_DISK_FULL, res.tail()
    errors = error_lines(res.log)
    assert len(errors) == 1 and not trainer_traceback(res.log), res.tail()
    assert f"the teacher export in {out}:" in errors[0] and "needs about" in errors[0] and "bytes) free" in errors[0], errors[0]
    model = out / "teacher" / "model"
    assert json.loads((model / "hrkd.json").read_text())["role"] == "teacher" and (model / "model.safetensors").is_file()
    ckpt = out / "teacher" / "checkpoints"
    assert (ckpt / "LATEST").read_text() == "step00000002" and checkpoint.verify(ckpt / "step00000002") is None
