"""The transfer set and cached teacher targets through the real trainer on 2 ranks (torchrun):

A: teacher stage, then logit-kd on the labelled rows plus 2 augmented copies each, the teacher's
   logits computed once (rank-sharded) into the data cache; the distill stage builds no teacher engine.
B: another run distilling A's teacher (teacher_from) with the same settings, by the deepspeed
   launcher (it passes the ranks' exit 3 on), reads the same cache, is preempted (SIGUSR1) mid-stage,
   relaunched, and every student step's loss equals A's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hrkd_ds.data.checked_cache import read_arrays  # noqa: E402
from hrkd_ds.distill.target_confidence import NEAR_UNIFORM, soft_target_entropy  # noqa: E402
from integration_helpers import (  # noqa: E402
    Launch, assert_ok, deepspeed_cmd, free_port, losses_by_step, preempt_after, read_results, run, single_cmd, torchrun_cmd,
    train_args,
)

ARGS = ["distill.method=logit-kd", "transfer.augment_factor=2", "transfer.teacher_targets=cached",
        "distill_train.max_steps=10", "distill_train.save_every=2", "distill_train.eval_every=5"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("transfer-cache")


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("transfer-runs")
    out = root / "a"
    res = run(torchrun_cmd(2, free_port()) + train_args(out, cache, *ARGS), root / "a.log")
    assert_ok(res, "transfer-set run A")
    return root, out, res


@pytest.mark.multiprocess
@pytest.mark.slow
def test_cached_targets_built_once_and_no_teacher_engine_in_the_stage(run_a, cache):
    _, out, res = run_a
    assert res.log.count("teacher targets computed and cached") == 1, res.tail()
    entries = list((cache / "teacher_targets").iterdir())
    assert len(entries) == 1
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert len(meta["sizes"]) == 4 and all(n % 3 == 0 for n in meta["sizes"])  # the labelled rows + 2 copies each
    assert len(list((cache / "transfer").iterdir())) == 1
    assert not list((out / "student").glob("teacher_partition.rank*.json"))  # no teacher engine in the stage
    results = read_results(out)
    assert results["student"]["method"] == "logit-kd" and "teacher" in results
    assert sorted(losses_by_step(out, "student")) == list(range(1, 11))
    # the run warns about nearly uniform soft targets exactly when the cached logits are (once, rank 0)
    arrays, _ = read_arrays(entries[0])  # logits only: no pooled term in this recipe
    warned = res.log.count("soft targets are nearly uniform")
    assert warned == (1 if soft_target_entropy(list(arrays.values())) > NEAR_UNIFORM else 0), res.tail()


@pytest.mark.multiprocess
@pytest.mark.slow
def test_other_run_reuses_the_cache_and_resumes_exactly(run_a, cache):
    root, a_out, _ = run_a
    out = root / "b"
    args = train_args(out, cache, *ARGS, "stages=[distill]", f"teacher_from={a_out}")
    first = preempt_after(Launch(deepspeed_cmd(2, free_port()) + args, root / "b.log"), out, "student", 3)
    assert first.rc == 3, f"preempted launch exited {first.rc}:\n{first.tail()}"
    assert "teacher targets read from the cache" in first.log and "computed and cached" not in first.log
    assert len(list((cache / "teacher_targets").iterdir())) == 1
    second = run(deepspeed_cmd(2, free_port()) + args, root / "b.log")
    assert_ok(second, "relaunch after preemption")
    a, b = losses_by_step(a_out, "student"), losses_by_step(out, "student")
    assert sorted(b) == list(range(1, 11))
    diffs = {s: abs(a[s] - b[s]) for s in a}
    assert max(diffs.values()) <= 1e-6 * max(1.0, max(abs(v) for v in a.values())), diffs
    assert read_results(out)["student"]["dev"] == read_results(a_out)["student"]["dev"]


@pytest.mark.multiprocess
def test_layer_wise_recipe_trains_on_the_transfer_set_with_the_online_teacher(run_a, cache):
    """kd reads the teacher's hidden states: `cached` keeps it online (one line says so), on the same
    transfer set (one cache entry)."""
    root, a_out, _ = run_a
    out = root / "kd"
    args = ["distill.method=kd", "transfer.augment_factor=2", "transfer.teacher_targets=cached", "stages=[distill]",
            f"teacher_from={a_out}", "distill_train.max_steps=3"]
    res = run(single_cmd() + train_args(out, cache, *args), root / "kd.log")
    assert_ok(res, "kd on the transfer set")
    assert "this recipe has layer-wise terms (per-token teacher states), the teacher runs online" in res.log
    assert "teacher targets" not in res.log.replace("transfer.teacher_targets", "")
    assert len(list((cache / "transfer").iterdir())) == 1
    assert list((out / "student").glob("teacher_partition.rank*.json"))  # the online teacher engine
    assert sorted(losses_by_step(out, "student")) == [1, 2, 3]
