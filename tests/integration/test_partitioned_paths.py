"""Issue 30 item 1 with 2 real ranks: the general stage's pretrained teacher, a student copied from
teacher layers, and the eval stage's teacher are partitioned (each rank about half of the teacher's
parameter bytes, never the whole) and give what the whole-teacher path gives."""

from __future__ import annotations

import json

import pytest
from integration_helpers import SCRIPTS, assert_ok, free_port, run, torchrun_cmd

pytestmark = pytest.mark.multiprocess

PATHS = ["general", "init_teacher_layers", "init_teacher_select", "eval"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("partitioned-paths")
    cmd = torchrun_cmd(2, free_port(), str(SCRIPTS / "partitioned_paths.py")) + [str(out)]
    assert_ok(run(cmd, out / "torchrun.log", timeout=240), "partitioned_paths.py under torchrun")
    return {p: [json.loads((out / f"{p}.rank{r}.json").read_text()) for r in range(2)] for p in PATHS}


def _partitioned(ranks: list[dict]) -> None:
    assert not any(r["error"] for r in ranks), ranks[0].get("traceback") or ranks[1].get("traceback")
    for r, res in enumerate(ranks):
        assert res["rank"] == r and res["world_size"] == 2
        assert res["held_bytes"] == pytest.approx(res["full_bytes"] / 2, rel=0.02), res  # about 1/N
        assert res["held_bytes"] < 0.6 * res["full_bytes"], res  # never the whole


def test_general_teacher_partitioned_same_losses(records):
    ranks = records["general"]
    _partitioned(ranks)
    for res in ranks:
        assert res["max_abs_diff"] < 1e-6, res  # embeddings, hidden states, attention scores
        assert res["loss_partitioned"] == pytest.approx(res["loss_whole"], rel=1e-6, abs=1e-7), res


@pytest.mark.parametrize("path", ["init_teacher_layers", "init_teacher_select"])
def test_student_init_from_partitioned_teacher_layer_by_layer(records, path):
    ranks = records[path]
    _partitioned(ranks)
    for res in ranks:
        assert res["same_keys"] and res["max_abs_diff"] == 0.0, res  # the same student weights, exactly
        assert res["gathers"] == 4, res  # embeddings, the two chosen layers, pooler: one at a time
        assert res["peak_held_bytes"] < 0.8 * res["full_bytes"], res  # partition + one layer, never the whole
        assert res["after_bytes"] == res["held_bytes"], res  # every gather released


def test_eval_teacher_partitioned_same_logits(records):
    ranks = records["eval"]
    _partitioned(ranks)
    for res in ranks:
        assert res["max_abs_diff"] < 1e-6 and res["acc_partitioned"] == res["acc_whole"], res
