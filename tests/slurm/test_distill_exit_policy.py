"""What slurm/distill.sh does with each trainer exit code, without a cluster: fake `srun` and
`scontrol` on PATH (srun writes the rank logs and exits with the code under test; scontrol records
a requeue). Requeue-able codes requeue; a rank killed after the others timed out counts as a
timeout, and so does NCCL's watchdog aborting a rank on the timeout; every other code fails the job
with that code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hrkd_ds.errors import EXIT_COLLECTIVE_TIMEOUT, EXIT_DISK_FULL, EXIT_PREEMPTED, EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_LINE = "hrkd_ds: error: collective timeout at stage teacher, step 4 on rank 0: rank 1 did not answer"

FAKE_SRUN = r"""#!/bin/bash
out=
for a in "$@"; do case $a in --output=*) out=${a#--output=} ;; esac; done
echo "$*" > "$FAKE_DIR/srun_args"
printf '%b' "$FAKE_RANK0" > "${out//%t/0}"
printf '%b' "$FAKE_RANK1" > "${out//%t/1}"
exit "$FAKE_RC"
"""
FAKE_SCONTROL = r"""#!/bin/bash
case "$1 $2" in
  "requeue "*) echo requeued >> "$FAKE_DIR/requeued" ;;
  "show hostnames") echo node1 ;;
  *) echo "" ;;
esac
"""


def run_job(tmp_path: Path, rc: int, rank0: str = "", rank1: str = "") -> tuple[int, str, bool]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "t",
           "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "node1",
           "REPO_DIR": str(REPO), "RUN_DIR": str(tmp_path / "run"), "FAKE_DIR": str(tmp_path),
           "FAKE_RC": str(rc), "FAKE_RANK0": rank0, "FAKE_RANK1": rank1}
    res = subprocess.run(["bash", str(REPO / "slurm" / "distill.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout + res.stderr, (tmp_path / "requeued").exists()


@pytest.mark.parametrize("rc", [EXIT_PREEMPTED, EXIT_COLLECTIVE_TIMEOUT])
def test_requeueable_codes_requeue(tmp_path, rc):
    code, log, requeued = run_job(tmp_path, rc)
    assert requeued and code == 0, log
    assert "--wait=" in (tmp_path / "srun_args").read_text()  # a hung rank cannot hold the step forever


def test_a_killed_hung_rank_after_a_timeout_is_requeued(tmp_path):
    code, log, requeued = run_job(tmp_path, 137, rank0=f"step 3\n{TIMEOUT_LINE}\n", rank1="step 3\n")
    assert requeued and code == 0 and "stopped answering" in log, log


def test_a_timeout_line_of_an_earlier_run_does_not_count(tmp_path):
    earlier = f"[launch_rank] restart=0\n{TIMEOUT_LINE}\n[launch_rank] restart=1\nstep 1\n"
    code, log, requeued = run_job(tmp_path, 137, rank0=earlier, rank1="[launch_rank] restart=1\n")
    assert not requeued and code == 137, log


# NCCL's watchdog on a survivor (GPUs): torch's line, then the C++ abort trace; the rank dies of
# SIGABRT before our line. The shape of torch 2.x's ProcessGroupNCCL output (not captured here: no GPU).
NCCL_WATCHDOG_LOG = (
    "step 3\n"
    "[rank0]:[E1207 13:50:01.123456789 ProcessGroupNCCL.cpp:632] [Rank 0] Watchdog caught collective operation "
    "timeout: WorkNCCL(SeqNum=57, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=10000) ran for 10086 "
    "milliseconds before timing out.\n"
    "[rank0]:[E1207 13:50:01.123500000 ProcessGroupNCCL.cpp:698] [Rank 0] To avoid data inconsistency, we are "
    "taking the entire process down.\n"
    "terminate called after throwing an instance of 'c10::DistBackendError'\n"
    "Exception raised from checkTimeout at /pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:635\n"
    + "".join(f"frame #{i}: <unknown function> + 0x{i:x} (0x{i:x} in libtorch_cuda.so)\n" for i in range(8))
)


@pytest.mark.parametrize("rc", [134, 137])  # the survivor's abort, or the hung rank srun killed
def test_an_nccl_watchdog_timeout_is_requeued(tmp_path, rc):
    code, log, requeued = run_job(tmp_path, rc, rank0=NCCL_WATCHDOG_LOG, rank1="step 3\n")
    assert requeued and code == 0 and "NCCL's watchdog" in log, log


def test_an_nccl_watchdog_line_of_an_earlier_run_does_not_count(tmp_path):
    earlier = f"[launch_rank] restart=0\n{NCCL_WATCHDOG_LOG}[launch_rank] restart=1\nstep 1\nTraceback: something else\n"
    code, log, requeued = run_job(tmp_path, 134, rank0=earlier, rank1="[launch_rank] restart=1\n")
    assert not requeued and code == 134, log


@pytest.mark.parametrize("rc", [EXIT_USAGE, EXIT_DISK_FULL, 137, 1])
def test_other_codes_fail_the_job_with_that_code(tmp_path, rc):
    code, log, requeued = run_job(tmp_path, rc, rank0="step 3\nTraceback: something else\n")
    assert not requeued and code == rc, log
