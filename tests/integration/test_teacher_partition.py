"""The frozen teacher under ZeRO-3 with 2 real ranks: each rank holds half, outputs unchanged."""

from __future__ import annotations

import json

import pytest
from integration_helpers import SCRIPTS, assert_ok, free_port, run, torchrun_cmd

pytestmark = pytest.mark.multiprocess

CONFIGS = ["teacher_zero3", "teacher_zero3_offload"]


@pytest.fixture(scope="module")
def partition_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher-partition")
    cmd = torchrun_cmd(2, free_port(), str(SCRIPTS / "teacher_partition.py")) + [str(out)] + [f"ds_configs/{c}.json" for c in CONFIGS]
    assert_ok(run(cmd, out / "torchrun.log", timeout=240), "teacher_partition.py under torchrun")
    return {c: [json.loads((out / f"{c}.rank{r}.json").read_text()) for r in range(2)] for c in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS)
def test_zero3_teacher_is_partitioned_and_exact(partition_results, config):
    ranks = partition_results[config]
    errors = [r["error"] for r in ranks if r["error"]]
    if errors and config.endswith("offload") and any("offload" in e.lower() for e in errors):
        pytest.skip(f"DeepSpeed refuses parameter offload here: {errors[0]}")
    assert not errors, ranks[0].get("traceback") or ranks[1].get("traceback")
    for r, res in enumerate(ranks):
        assert res["rank"] == r and res["world_size"] == 2
        assert res["fraction"] == pytest.approx(0.5, abs=0.02), res["fraction"]  # each rank holds about half
        assert res["trainable_after"] == 0 and res["module_training"] is False  # frozen, eval mode (dropout 0.1 off)
        assert set(res["max_abs_diff"]) >= {"logits", "all_logits", "embeddings", "hidden_0", "hidden_1", "attention_0", "attention_1"}
        worst = max(res["max_abs_diff"].items(), key=lambda kv: kv[1])
        assert worst[1] < 1e-6, (r, worst)
        # the trainer's loading path: partitioned from construction on, same outputs
        assert res["loaded_fraction"] == pytest.approx(0.5, abs=0.02), res["loaded_fraction"]
        worst = max(res["loaded_max_abs_diff"].items(), key=lambda kv: kv[1])
        assert worst[1] < 1e-6, (r, "loaded", worst)
