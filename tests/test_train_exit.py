"""Every way out of the trainer after the process group exists closes it first, with the exit code
intact: leaving it open lets interpreter teardown meet gloo's worker threads, which aborted a rank
(SIGABRT) in CI and hid exit code 4 from the launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, torch
import hrkd_ds.train as train_mod
from hrkd_ds.engine.loop import Preempted
from hrkd_ds.engine.nonfinite import Diverged
from hrkd_ds.errors import UserError

def fail(*args, **kwargs):
    raise {"diverged": Diverged("test stop"), "preempted": Preempted(), "usererror": UserError("bad field x"),
           "crash": RuntimeError("boom")}[sys.argv[1]]

train_mod.StageContext.setup = staticmethod(fail)
try:
    train_mod.main([])
except BaseException as exc:
    code = exc.code if isinstance(exc, SystemExit) else type(exc).__name__
    print("EXIT", code, "OPEN", torch.distributed.is_initialized())
"""


# one stop that every rank decides together (Preempted takes the same branch), one error of a single rank
@pytest.mark.parametrize("how,code", [("diverged", "4"), ("usererror", "2")])
def test_the_process_group_is_closed_on_every_error_exit(how, code):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-c", SCRIPT, how], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert f"EXIT {code} OPEN False" in res.stdout, res.stdout[-1000:] + res.stderr[-2000:]
