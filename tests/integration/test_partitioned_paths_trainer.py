"""Issue 30 item 1 in the real trainer, 2 torchrun ranks: a `teacher_layers` student copied from
the partitioned teacher, and the `eval` stage's teacher as a ZeRO-3 engine over partitions (each
rank records half the teacher's bytes) re-evaluating to the accuracies the stages recorded."""

from __future__ import annotations

import json

import pytest
from integration_helpers import assert_accuracies, assert_ok, free_port, read_results, run, torchrun_cmd, train_args

pytestmark = pytest.mark.multiprocess

DOMAINS = ["books", "dvd", "electronics", "kitchen"]
LAYERS_STUDENT = ["student.init=teacher_layers", "student.teacher_layers=[2]", "student.num_layers=1",
                  "student.hidden_size=32", "student.num_heads=2", "student.intermediate_size=64"]  # the teacher's widths


def test_teacher_layers_student_and_eval_stage_on_partitions(it_root, it_cache):
    out = it_root / "partitioned_paths"
    cmd = torchrun_cmd(2, free_port()) + train_args(out, it_cache, "stages=[teacher,distill,eval]", *LAYERS_STUDENT,
                                                    deepspeed="ds_configs/zero2.json")
    assert_ok(run(cmd, it_root / "partitioned_paths.log"), "2-rank teacher_layers + eval run")
    records = [json.loads((out / "eval" / f"teacher_partition.rank{r}.json").read_text()) for r in range(2)]
    for r, rec in enumerate(records):
        assert rec["rank"] == r and rec["world_size"] == 2
        assert rec["held_bytes"] == pytest.approx(rec["full_bytes"] / 2, rel=0.02), rec
    results = read_results(out)
    for role in ("teacher", "student"):
        assert_accuracies(results[role]["eval"], DOMAINS)
        for split in ("dev", "test"):  # the partitioned re-evaluation agrees with the stage's own
            assert results[role]["eval"][split] == pytest.approx(results[role][split], abs=1e-12), (role, split)
