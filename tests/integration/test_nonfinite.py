"""A NaN loss with 2 real ranks: `skip` drops the step on both ranks and the run finishes with
finite weights; `stop` ends the run with exit code 4, one line naming the settings that can cause
it, and nothing written after it."""

from __future__ import annotations

import json
import math

import pytest
from integration_helpers import assert_ok, free_port, read_metrics, run, torchrun_cmd, train_args

from hrkd_ds.engine import checkpoint
from hrkd_ds.engine.nonfinite import EXIT_DIVERGED, FAULT_ENV

pytestmark = pytest.mark.multiprocess


def _cmd(out, cache, *extra):
    return torchrun_cmd(2, free_port()) + train_args(out, cache, "stages=[teacher]", "teacher_train.save_every=2", *extra)


def test_nan_loss_is_skipped_on_every_rank(it_root, it_cache):
    out = it_root / "nan_skip"
    assert_ok(run(_cmd(out, it_cache), it_root / "nan_skip.log", env={FAULT_ENV: "3,4"}), "run with NaN at steps 3, 4")
    rows = [r for r in read_metrics(out) if r["stage"] == "teacher"]
    assert [r["step"] for r in rows if "skipped" in r] == [3, 4]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [1, 2, 5, 6] and all(math.isfinite(v) for v in losses.values())
    assert (out / "teacher" / "DONE").is_file()
    from safetensors.torch import load_file

    weights = load_file(str(out / "teacher" / "model" / "model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())


def test_stop_policy_exits_4_with_one_line_and_keeps_the_last_good_checkpoint(it_root, it_cache):
    out = it_root / "nan_stop"
    res = run(_cmd(out, it_cache, "train.nonfinite=stop"), it_root / "nan_stop.log", env={FAULT_ENV: "3"})
    assert res.rc != 0, res.tail()
    errors = [line for line in res.log.splitlines() if line.startswith("hrkd_ds: error:")]
    assert len(errors) == 1 and "teacher step 3" in errors[0] and "not finite" in errors[0], res.tail()
    # the settings of this run that can cause it, with their values (TINY pins teacher_train.lr=1e-3)
    assert errors[0].endswith("settings that can cause it: teacher_train.lr=0.001, precision fp32"), errors[0]
    assert f"exitcode  : {EXIT_DIVERGED}" in res.log or f"exit code {EXIT_DIVERGED}" in res.log or res.rc == EXIT_DIVERGED
    ckpt = out / "teacher" / "checkpoints"
    tag = (ckpt / "LATEST").read_text().strip()
    assert json.loads((ckpt / tag / "progress.json").read_text())["step"] == 2  # nothing after the NaN
    assert checkpoint.verify(ckpt / tag) is None
    assert not (out / "teacher" / "DONE").exists()
    # relaunching without the fault resumes from step 2 and finishes
    assert_ok(run(_cmd(out, it_cache, "train.nonfinite=stop"), it_root / "nan_stop.log"), "relaunch")
    assert sorted(r["step"] for r in read_metrics(out) if r["stage"] == "teacher" and "loss" in r) == list(range(1, 7))
