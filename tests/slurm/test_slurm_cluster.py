"""slurm/distill.sh on a real two-node Slurm cluster (two slurmd on this machine).

The fake-trainer tests (tests/slurm/fake_trainer.py: same launch/signal/resume contract, seconds
per run) exercise the Slurm machinery: rank mapping, per-job dirs, signal forwarding, requeue,
job chaining, failure propagation. The real-trainer tests run hrkd_ds/train.py on the embedded
default across 2 nodes x 1 rank, once straight through and once preempted and requeued.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
from pathlib import Path

import pytest

from slurm_helpers import REPO, dump_logs, read_metrics

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "slurm" / "distill.sh"
FAKE = "tests/slurm/fake_trainer.py"
TRAIN = REPO / "hrkd_ds" / "train.py"
needs_trainer = pytest.mark.skipif(not TRAIN.is_file(), reason="hrkd_ds/train.py not written yet")


def train_rows(rows: list[dict]) -> list[dict]:
    """Per-step training rows (evaluation rows share a step number but carry an 'eval' key)."""
    return [r for r in rows if "stage" in r and "step" in r and "eval" not in r]


def assert_each_step_once(rows: list[dict], expected: dict[str, int], context: str) -> None:
    counts = collections.Counter((r["stage"], r["step"]) for r in train_rows(rows))
    for stage, n in expected.items():
        got = sorted(step for (s, step) in counts if s == stage)
        dup = sorted(step for (s, step), c in counts.items() if s == stage and c > 1)
        assert got == list(range(1, n + 1)) and not dup, (
            f"stage {stage}: expected steps 1..{n} once each, got {got} (repeated: {dup})\n{context}")
    extra = {s for s, _ in counts} - set(expected)
    assert not extra, f"unexpected stages {extra}\n{context}"


def run_dir(runs: Path, job_id: str) -> Path:
    matches = list(runs.glob(f"*-{job_id}"))
    assert len(matches) == 1, f"expected one run dir for job {job_id} in {runs}: {matches}"
    return matches[0]


# ------------------------------------------------------------------------------- fake trainer
def test_two_nodes_sbatch_wait(slurm_cluster, tmp_path):
    """The user's form, from the repo root: `sbatch --wait slurm/distill.sh`; 2 nodes x 1 rank."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=runs)
    res = subprocess.run(["sbatch", "--wait", "--parsable", f"--output={tmp_path}/slurm-%x-%j.out",
                          "slurm/distill.sh", "fake.step_sleep=0.1",
                          "teacher_train.max_steps=4", "distill_train.max_steps=3"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    assert res.returncode == 0, f"sbatch --wait rc={res.returncode}: {res.stdout}{res.stderr}\n{logs()}"
    job_id = res.stdout.strip().split(";")[0]
    out = run_dir(runs, job_id)
    assert out.name == f"hrkd-distill-{job_id}"
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["restarts"] == 0
    assert_each_step_once(read_metrics(out / "metrics.jsonl"), {"teacher": 4, "distill": 3}, logs())
    rank_logs = {p.name: p.read_text() for p in (out / "logs").glob("rank*.log")}
    assert set(rank_logs) == {"rank0.log", "rank1.log"}, logs()
    assert "node=node1 rank=0/2" in rank_logs["rank0.log"] and "node=node2 rank=1/2" in rank_logs["rank1.log"]
    # MASTER_ADDR is node1's NodeAddr (names do not resolve here); port derived from the job id
    assert f"master=127.0.0.1:{20000 + int(job_id) % 20000}" in rank_logs["rank0.log"]
    batch = (out / "logs" / "slurm-batch.out").read_text()  # link to Slurm's own output file
    assert "done:" in batch


def test_preempt_requeue_resume(slurm_cluster, tmp_path):
    """USR1 to the batch shell (what --signal=B:USR1@T does) -> checkpoint, requeue, resume."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=runs)
    job_id = slurm_cluster.sbatch([str(SCRIPT), "fake.step_sleep=0.25", "teacher_train.max_steps=12",
                                   "distill_train.max_steps=8"], cwd=tmp_path, env=env)
    out = runs / f"hrkd-distill-{job_id}"
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    slurm_cluster.wait_for(lambda: len(train_rows(read_metrics(out / "metrics.jsonl"))) >= 3, 60,
                           "3 logged steps", logs)
    slurm_cluster.cluster.run(["scancel", "--batch", "--signal=USR1", job_id])
    info = slurm_cluster.wait_job(job_id, 120, logs)
    assert info["JobState"] == "COMPLETED", f"{info}\n{logs()}"
    assert info["Restarts"] == "1", f"{info}\n{logs()}"
    rows = read_metrics(out / "metrics.jsonl")
    assert_each_step_once(rows, {"teacher": 12, "distill": 8}, logs())
    restarts = {r["restart"] for r in rows}
    assert restarts == {0, 1}, f"steps were not split across the two runs: {restarts}"
    batch = (tmp_path / f"slurm-hrkd-distill-{job_id}.out").read_text()
    assert "received SIGUSR1" in batch and "requeueing job" in batch and "restart=1" in batch, batch


def test_scancel_checkpoints_but_does_not_requeue(slurm_cluster, tmp_path):
    """`scancel` (SIGTERM, no warning): the ranks checkpoint, the job stays cancelled."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=runs)
    job_id = slurm_cluster.sbatch([str(SCRIPT), "fake.step_sleep=0.25", "teacher_train.max_steps=200"],
                                  cwd=tmp_path, env=env)
    out = runs / f"hrkd-distill-{job_id}"
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    slurm_cluster.wait_for(lambda: len(train_rows(read_metrics(out / "metrics.jsonl"))) >= 3, 60,
                           "3 logged steps", logs)
    slurm_cluster.cluster.run(["scancel", job_id])
    info = slurm_cluster.wait_job(job_id, 60, logs)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", f"{info}\n{logs()}"
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert ckpt["step"] >= 3, ckpt
    slurm_cluster.wait_for(lambda: "not requeueing" in (tmp_path / f"slurm-hrkd-distill-{job_id}.out").read_text(),
                           20, "the batch script's cancel message", logs)


@pytest.mark.skipif(os.environ.get("HRKD_SLURM_SLOW") != "1", reason="~90 s; set HRKD_SLURM_SLOW=1")
def test_time_limit_warning_requeues(slurm_cluster, tmp_path):
    """The real --signal=B:USR1@T path: a 1-minute limit, warned 45 s before; ends after >=1 requeue."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=runs)
    job_id = slurm_cluster.sbatch(["--time=1", "--signal=B:USR1@45", str(SCRIPT), "fake.step_sleep=0.25",
                                   "teacher_train.max_steps=100", "distill_train.max_steps=20"], cwd=tmp_path, env=env)
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    info = slurm_cluster.wait_job(job_id, 240, logs)
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, f"{info}\n{logs()}"
    assert_each_step_once(read_metrics(runs / f"hrkd-distill-{job_id}" / "metrics.jsonl"),
                          {"teacher": 100, "distill": 20}, logs())


def test_failure_is_not_requeued(slurm_cluster, tmp_path):
    """A trainer error (exit 2) fails the job with that exit code; only exit 3 requeues."""
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=tmp_path / "runs")
    job_id = slurm_cluster.sbatch([str(SCRIPT), "--not-an-option"], cwd=tmp_path, env=env)
    info = slurm_cluster.wait_job(job_id, 60, lambda: dump_logs(tmp_path))
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0" and info["Restarts"] == "0", info


def test_chain_teacher_then_distill(slurm_cluster, tmp_path):
    """The documented one-liner: distill waits (afterok) for the teacher job and reads its run dir."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=runs)
    one_liner = (f"tid=$(sbatch --parsable {SCRIPT} teacher fake.step_sleep=0.1) && "
                 f"sbatch --parsable --dependency=afterok:$tid --export=ALL,TEACHER_JOB=$tid "
                 f"{SCRIPT} distill fake.step_sleep=0.1 && echo $tid")
    res = subprocess.run(["bash", "-c", one_liner], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    distill_id, teacher_id = res.stdout.split()
    assert slurm_cluster.job(distill_id).get("Reason") in ("Dependency", "None", "Resources", "Priority")
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    assert slurm_cluster.wait_job(distill_id, 90, logs)["JobState"] == "COMPLETED", logs()
    assert slurm_cluster.job(teacher_id)["JobState"] == "COMPLETED"
    teacher_out, distill_out = runs / f"hrkd-distill-{teacher_id}", runs / f"hrkd-distill-{distill_id}"
    assert_each_step_once(read_metrics(teacher_out / "metrics.jsonl"), {"teacher": 5}, logs())
    assert_each_step_once(read_metrics(distill_out / "metrics.jsonl"), {"distill": 5}, logs())
    assert json.loads((distill_out / "results.json").read_text())["teacher_from"] == str(teacher_out)
    assert teacher_out.stat().st_mtime <= distill_out.stat().st_mtime


# ------------------------------------------------------------------------------- real trainer
REAL_ARGS = ["teacher_train.max_steps=6", "distill_train.max_steps=6", "teacher_train.log_every=1",
             "distill_train.log_every=1", "tracking.progress_bar=false", "tracking.wandb_mode=disabled",
             "tracking.plot=false"]


def _stages(rows: list[dict]) -> dict[str, int]:
    """Stage names as the trainer writes them (teacher, then the student's) -> max step seen."""
    out: dict[str, int] = {}
    for r in train_rows(rows):
        out[r["stage"]] = max(out.get(r["stage"], 0), r["step"])
    return out


@needs_trainer
def test_real_trainer_two_nodes(slurm_cluster, tmp_path):
    """`sbatch --wait slurm/distill.sh` on the embedded default, 2 nodes x 1 rank, short."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(RUNS_DIR=runs)
    res = subprocess.run(["sbatch", "--wait", "--parsable", str(SCRIPT), *REAL_ARGS],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    assert res.returncode == 0, f"sbatch --wait rc={res.returncode}: {res.stdout}{res.stderr}\n{logs()}"
    out = run_dir(runs, res.stdout.strip().split(";")[0])
    results = json.loads((out / "results.json").read_text())
    assert results, "empty results.json"
    rows = read_metrics(out / "metrics.jsonl")
    stages = _stages(rows)
    assert len(stages) == 2 and set(stages.values()) == {6}, f"{stages}\n{logs()}"
    assert_each_step_once(rows, stages, logs())


@needs_trainer
def test_real_trainer_preempt_requeue(slurm_cluster, tmp_path):
    """The real trainer signalled mid-run: checkpoint, exit 3, requeue, resume; no step lost or repeated."""
    runs = tmp_path / "runs"
    env = slurm_cluster.env(RUNS_DIR=runs)
    args = [a.replace("max_steps=6", "max_steps=10") for a in REAL_ARGS]
    job_id = slurm_cluster.sbatch([str(SCRIPT), *args], cwd=tmp_path, env=env)
    out = runs / f"hrkd-distill-{job_id}"
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    slurm_cluster.wait_for(lambda: len(train_rows(read_metrics(out / "metrics.jsonl"))) >= 2, 150,
                           "2 logged steps", logs)
    slurm_cluster.cluster.run(["scancel", "--batch", "--signal=USR1", job_id])
    info = slurm_cluster.wait_job(job_id, 200, logs)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{logs()}"
    rows = read_metrics(out / "metrics.jsonl")
    stages = _stages(rows)
    assert len(stages) == 2 and set(stages.values()) == {10}, f"{stages}\n{logs()}"
    assert_each_step_once(rows, stages, logs())
    assert (out / "results.json").is_file()
