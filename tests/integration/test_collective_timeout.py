"""A hung rank with 2 real ranks under torchrun: rank 1 is SIGSTOPped mid-run; rank 0 leaves within
train.collective_timeout_s with one line naming the stage, the step and rank 1, exit code 5
(requeue-able); the relaunch resumes from the last checkpoint with an uninterrupted run's losses."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from integration_helpers import (
    Launch, assert_ok, free_port, losses_by_step, max_logged_step, run, torchrun_cmd, train_args,
)

from hrkd_ds.errors import EXIT_COLLECTIVE_TIMEOUT, REQUEUE_EXIT_CODES

pytestmark = pytest.mark.multiprocess
TIMEOUT_S = 10
ARGS = ["stages=[teacher]", "teacher_train.max_steps=8", "teacher_train.save_every=2", "teacher_train.eval_every=4",
        f"train.collective_timeout_s={TIMEOUT_S}"]


def rank_of(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in env if e.startswith(b"RANK="))[5:])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_stopped_rank_ends_the_job_within_the_timeout_and_the_relaunch_resumes(it_root, it_cache):
    ref = it_root / "timeout_ref"
    assert_ok(run(torchrun_cmd(2, free_port()) + train_args(ref, it_cache, *ARGS), it_root / "timeout_ref.log"), "reference")

    out, log = it_root / "timeout", it_root / "timeout.log"
    launch = Launch(torchrun_cmd(2, free_port()) + train_args(out, it_cache, *ARGS), log)
    assert launch.wait_until(lambda: max_logged_step(out, "teacher") >= 3, poll=0.02), launch.wait(5).tail()
    pids = {rank_of(pid): pid for pid in launch.rank_pids()}
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGSTOP)
    t0 = time.monotonic()
    while alive(pids[0]) and time.monotonic() - t0 < TIMEOUT_S + 60:
        time.sleep(0.1)
    survivor_left = time.monotonic() - t0
    res = launch.wait()  # torchrun then takes the stopped rank down (SIGTERM, then SIGKILL)
    assert survivor_left < TIMEOUT_S + 15, f"rank 0 took {survivor_left:.0f}s to leave:\n{res.tail()}"
    errors = [line for line in res.log.splitlines() if line.startswith("hrkd_ds: error:")]
    assert len(errors) == 1, res.tail()
    line = errors[0]
    assert "collective timeout at stage teacher, step " in line and "on rank 0: rank 1 did not answer" in line, line
    assert f"train.collective_timeout_s={TIMEOUT_S}" in line, line
    assert f"exitcode  : {EXIT_COLLECTIVE_TIMEOUT}" in res.log and EXIT_COLLECTIVE_TIMEOUT in REQUEUE_EXIT_CODES, res.tail()
    assert not re.search(r'File "[^"]*hrkd_ds/', res.log), res.tail()  # no traceback through the trainer

    assert_ok(run(torchrun_cmd(2, free_port()) + train_args(out, it_cache, *ARGS), log), "relaunch")
    want, got = losses_by_step(ref, "teacher"), losses_by_step(out, "teacher")
    assert sorted(got) == sorted(want) == list(range(1, 9))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6), (step, want, got)
    assert len({round(v, 6) for v in want.values()}) > 1, "loss never changed: the comparison would be vacuous"
