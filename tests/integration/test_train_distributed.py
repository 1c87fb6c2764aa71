"""The trainer with 2 real ranks: deepspeed launcher and torchrun, ZeRO-2/3, resume, 1-vs-2 ranks."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
from hrkd_ds.engine import checkpoint
from integration_helpers import (
    RESUME_ARGS, Launch, assert_accuracies, assert_ok, deepspeed_cmd, free_port, losses_by_step, max_logged_step,
    preempt_after, read_metrics, read_results, run, single_cmd, train_args,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

DOMAINS = ["books", "dvd", "electronics", "kitchen"]


def check_finished_run(out, teacher_steps: int, student_steps: int, world: int) -> dict:
    """results.json, metrics.jsonl (every step exactly once per stage), exports, DONE markers."""
    results = read_results(out)
    for role in ("teacher", "student"):
        assert_accuracies(results[role], DOMAINS)
    for stage, n in (("teacher", teacher_steps), ("student", student_steps)):
        assert sorted(losses_by_step(out, stage)) == list(range(1, n + 1)), stage
        assert all(math.isfinite(v) for v in losses_by_step(out, stage).values())
        evals = [r["step"] for r in read_metrics(out) if r["stage"] == stage and "eval" in r]
        assert len(evals) == len(set(evals)) and evals and evals[-1] == n, (stage, evals)
    for role in ("teacher", "student"):
        model = out / role / "model"
        assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
        assert (model / "tokenizer_config.json").is_file()
        assert (out / role / "DONE").is_file()
    assert (out / "config.yaml").is_file()
    for role in ("teacher", "student"):  # every rank wrote its RNG state into the final checkpoint
        ckpt = out / role / "checkpoints"
        tag = ckpt / (ckpt / "LATEST").read_text().strip()
        assert sorted(p.name for p in tag.glob("rng_rank*.npz")) == [f"rng_rank{r}.npz" for r in range(world)]
        assert checkpoint.verify(tag) is None
    return results


def test_deepspeed_launcher_zero2_student_zero3_teacher(zero2_run):
    out, res = zero2_run
    assert res.log.count("exits successfully") >= 2, "the deepspeed launcher did not report 2 ranks"
    results = check_finished_run(out, 8, 10, world=2)
    student_rows = [r for r in read_metrics(out) if r["stage"] == "student" and "loss" in r]
    w = student_rows[-1]["weights"]  # hrkd: (L+1) x K domain weights, each row a distribution
    assert len(w) == 2 and all(len(row) == len(DOMAINS) and abs(sum(row) - 1) < 1e-4 for row in w)
    assert results["student"]["method"] == "hrkd"


def test_torchrun_zero3_student_kd_offloaded_teacher(zero3_run):
    out, _ = zero3_run
    results = check_finished_run(out, 6, 6, world=2)
    assert results["student"]["method"] == "kd"
    records = [json.loads((out / "student" / f"teacher_partition.rank{r}.json").read_text()) for r in range(2)]
    for r, rec in enumerate(records):  # each rank holds about half of the teacher, in CPU memory (offload)
        assert rec["rank"] == r and rec["world_size"] == 2
        assert rec["fraction"] == pytest.approx(0.5, abs=0.02), rec
        assert rec["held_bytes"] == pytest.approx(rec["full_bytes"] / 2, rel=0.02) and rec["devices"] == ["cpu"]
    assert records[0]["full_bytes"] == records[1]["full_bytes"] > 0


def test_one_rank_matches_two_ranks_on_the_same_global_batch(zero3_run, it_root, it_cache):
    """Teacher stage, dropout 0: 2 ranks x batch_per_domain 2 (zero3_run) vs 1 process x 4.

    The sampler's strided rank pieces make step s's global batch the same examples for any world
    size (p[s*B*W:(s+1)*B*W] of the epoch permutation; only the order inside a domain differs), the
    loss is a per-domain mean and DeepSpeed averages gradients over ranks, so the rank-averaged
    per-step losses must agree up to float summation order.
    """
    from hrkd_ds.data.sampler import EpisodicDomainSampler

    sizes = [300, 301, 302, 303]  # premise, checked on the sampler itself: same global batch per step
    one = EpisodicDomainSampler(sizes, 4, seed=42)
    two = [EpisodicDomainSampler(sizes, 2, rank=r, world_size=2, seed=42) for r in range(2)]
    for step in range(6):
        for d in range(len(sizes)):
            assert sorted(one.episode(0, step)[d]) == sorted(two[0].episode(0, step)[d] + two[1].episode(0, step)[d])

    two_out, _ = zero3_run
    one_out = it_root / "one_rank"
    cmd = single_cmd() + train_args(one_out, it_cache, "stages=[teacher]", "teacher.dropout=0", "teacher_train.batch_per_domain=4",
                                    deepspeed="ds_configs/zero3.json")
    assert_ok(run(cmd, it_root / "one_rank.log"), "1-rank run")
    a, b = losses_by_step(one_out, "teacher"), losses_by_step(two_out, "teacher")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4), (step, a, b)
    assert len({round(v, 6) for v in a.values()}) > 1, "loss never changed: the comparison would be vacuous"


def _latest_step(ckpt_dir) -> int:
    p = ckpt_dir / "LATEST"
    return json.loads((ckpt_dir / p.read_text().strip() / "progress.json").read_text())["step"] if p.is_file() else 0


def test_exact_resume_after_preemption_and_crash(zero2_run, it_root, it_cache):
    """B: SIGUSR1 mid-teacher (exit 3), relaunch, SIGKILL one rank mid-distill after a checkpoint,
    relaunch to the end. Every stage's per-step losses must equal the uninterrupted run A's."""
    a_out, _ = zero2_run
    out = it_root / "resume_b"
    log = it_root / "resume_b.log"

    def launch() -> Launch:
        return Launch(deepspeed_cmd(2, free_port()) + train_args(out, it_cache, *RESUME_ARGS, deepspeed="ds_configs/zero2.json"), log)

    # 1) preemption: SIGUSR1 to both ranks once teacher step 3 is logged -> checkpoint, exit 3
    r1 = preempt_after(launch(), out, "teacher", 3)
    assert r1.rc == 3, f"preempted launch exited {r1.rc}:\n{r1.tail()}"
    stopped = _latest_step(out / "teacher" / "checkpoints")
    assert 3 <= stopped < 8, stopped
    assert max_logged_step(out, "teacher") == stopped
    assert not (out / "student").exists()

    # 2) crash: SIGKILL one rank after a student checkpoint exists and a later step was logged
    b2 = launch()
    ckpt = out / "student" / "checkpoints"

    def crash_point() -> bool:
        saved = _latest_step(ckpt) if (ckpt / "LATEST").is_file() else 0
        return saved >= 2 and max_logged_step(out, "student") > saved

    assert b2.wait_until(crash_point, poll=0.02), f"no student checkpoint + later step:\n{b2.wait(5).tail()}"
    ranks = b2.rank_pids()
    assert len(ranks) == 2, ranks
    os.kill(max(ranks), signal.SIGKILL)
    r2 = b2.wait()
    assert r2.rc not in (0, 3), f"crashed launch exited {r2.rc}:\n{r2.tail()}"
    assert not (out / "student" / "DONE").exists()

    # 3) relaunch to completion
    r3 = launch().wait()
    assert_ok(r3, "relaunch after crash")
    check_finished_run(out, 8, 10, world=2)
    for stage, n in (("teacher", 8), ("student", 10)):
        a, b = losses_by_step(a_out, stage), losses_by_step(out, stage)
        assert sorted(b) == list(range(1, n + 1))
        diffs = {s: abs(a[s] - b[s]) for s in a}
        assert max(diffs.values()) <= 1e-6 * max(1.0, max(abs(v) for v in a.values())), (stage, diffs)
    evals_a = [(r["stage"], r["step"], r["eval"]) for r in read_metrics(a_out) if "eval" in r]
    evals_b = [(r["stage"], r["step"], r["eval"]) for r in read_metrics(out) if "eval" in r]
    assert [e[:2] for e in evals_a] == [e[:2] for e in evals_b]
    assert read_results(out)["student"]["dev"] == read_results(a_out)["student"]["dev"]
    assert read_results(out)["teacher"]["dev"] == read_results(a_out)["teacher"]["dev"]
