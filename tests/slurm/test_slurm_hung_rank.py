"""A hung rank on a real two-node Slurm cluster: rank 1 (node2) SIGSTOPs itself before step 4;
rank 0 leaves on the collective timeout with the trainer's line and exit code, srun's --wait ends
the stopped rank, distill.sh reads the survivor's line, requeues, and the requeued job resumes
after the last step both ranks finished: every step logged once, one restart."""

from __future__ import annotations

import pytest

from slurm_helpers import dump_logs, read_metrics
from test_slurm_cluster import FAKE, SCRIPT, assert_each_step_once

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_hung_rank_times_out_and_the_job_is_requeued(slurm_cluster, tmp_path):
    runs = tmp_path / "runs"
    env = slurm_cluster.env(TRAIN_SCRIPT=FAKE, RUNS_DIR=runs, HUNG_RANK_GRACE="5")
    job_id = slurm_cluster.sbatch([str(SCRIPT), "fake.step_sleep=0.1", "stages=teacher", "teacher_train.max_steps=8",
                                   "fake.hang_rank=1", "fake.hang_step=4", "train.collective_timeout_s=5"],
                                  cwd=tmp_path, env=env)
    logs = lambda: dump_logs(tmp_path)  # noqa: E731
    info = slurm_cluster.wait_job(job_id, 180, logs)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{logs()}"
    out = runs / f"hrkd-distill-{job_id}"
    assert_each_step_once(read_metrics(out / "metrics.jsonl"), {"teacher": 8}, logs())
    rank0 = (out / "logs" / "rank0.log").read_text()
    assert "hrkd_ds: error: collective timeout at stage teacher, step 4 on rank 0: rank 1 did not answer" in rank0, rank0
    batch = (tmp_path / f"slurm-hrkd-distill-{job_id}.out").read_text()
    assert "stopped answering" in batch and "requeueing job" in batch, batch
