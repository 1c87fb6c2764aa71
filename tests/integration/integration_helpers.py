"""Launching the real trainer (1 process, the deepspeed launcher, torchrun) from tests.

Every launch gets its own process group (so a timeout can stop the whole tree by its id), its own
free master port, OMP_NUM_THREADS=1 (2 ranks share 2 cores) and a hard timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
TRAIN = "hrkd_ds/train.py"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
LAUNCH_TIMEOUT = float(os.environ.get("HRKD_IT_TIMEOUT", "420"))

# A model small enough that a 2-rank run is dominated by start-up, on 20% of the sample.
TINY = [
    "data.max_seq_len=32", "tokenizer.vocab_size=400",
    "data.train_fraction=0.2", "data.dev_fraction=0.02", "data.test_fraction=0.02",
    "teacher.hidden_size=32", "teacher.num_layers=2", "teacher.num_heads=2", "teacher.intermediate_size=64",
    "student.hidden_size=16", "student.num_layers=1", "student.num_heads=2", "student.intermediate_size=32",
    "teacher_train.max_steps=6", "distill_train.max_steps=6",
    "teacher_train.eval_every=3", "distill_train.eval_every=3",
    "teacher_train.batch_per_domain=2", "distill_train.batch_per_domain=2",
    "teacher_train.log_every=1", "distill_train.log_every=1",
    "teacher_train.lr=1e-3", "distill_train.lr=1e-3",  # pinned: the tests must not follow default tuning
    "tracking.wandb_mode=disabled", "tracking.progress_bar=false", "tracking.plot=false",
]  # fmt: skip

# Run A of the resume test and the ZeRO-2 + ZeRO-3-teacher end-to-end test: same command.
RESUME_ARGS = [
    "teacher_train.max_steps=8", "teacher_train.save_every=2", "teacher_train.eval_every=4",
    "distill_train.max_steps=10", "distill_train.save_every=2", "distill_train.eval_every=5",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def deepspeed_cmd(nproc: int, port: int, script: str = TRAIN) -> list[str]:
    exe = shutil.which("deepspeed")
    head = [exe] if exe else [sys.executable, "-m", "deepspeed.launcher.runner"]
    return head + ["--num_gpus", str(nproc), "--master_port", str(port), script]


def torchrun_cmd(nproc: int, port: int, script: str = TRAIN) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port), script]


def single_cmd(script: str = TRAIN) -> list[str]:
    return [sys.executable, script]


@dataclass
class Result:
    rc: int
    log: str
    seconds: float

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.splitlines()[-n:])


class Launch:
    """One launcher (or single process) in its own session; stdout+stderr go to a log file."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd, self.log_path = cmd, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        self._log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self._log.flush()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**child_env(), **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this launch created (pgid == our child's pid)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = LAUNCH_TIMEOUT) -> Result:
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait()
            rc = -9
            self._log.write(f"\n[test] killed after {timeout:.0f}s timeout\n".encode())
        self._log.close()
        self.kill_group()  # stragglers of this launch only
        return Result(rc, self.log_path.read_text(errors="replace"), time.monotonic() - self.t0)

    def wait_until(self, cond: Callable[[], bool], timeout: float = LAUNCH_TIMEOUT, poll: float = 0.05) -> bool:
        """Poll `cond` while the launch runs; False if the launch ended (or timed out) first."""
        while time.monotonic() - self.t0 < timeout:
            if cond():
                return True
            if self.proc.poll() is not None:
                return cond()
            time.sleep(poll)
        return False

    def rank_pids(self) -> list[int]:
        """The training processes below the launcher: descendants that carry a LOCAL_RANK variable."""
        found = []
        for pid in descendants(self.proc.pid):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if any(e.startswith(b"LOCAL_RANK=") for e in env) and b"train.py" in cmdline and b"torch.distributed.run" not in cmdline:
                found.append(pid)
        return found


def preempt_after(launch: Launch, out: Path, stage: str, step: int) -> Result:
    """SIGUSR1 to both ranks once `stage` has logged `step`; the launch's result (exit 3 expected)."""
    assert launch.wait_until(lambda: max_logged_step(out, stage) >= step), f"no {stage} step {step}:\n{launch.wait(5).tail()}"
    ranks = launch.rank_pids()
    assert len(ranks) == 2, ranks
    for pid in ranks:
        os.kill(pid, signal.SIGUSR1)
    return launch.wait()


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def run(cmd: list[str], log: Path, timeout: float = LAUNCH_TIMEOUT, env: dict[str, str] | None = None) -> Result:
    return Launch(cmd, log, env).wait(timeout)


def train_args(out: Path, cache: Path, *extra: str, deepspeed: str | None = None) -> list[str]:
    args = ["--deepspeed", deepspeed] if deepspeed else []
    return args + [f"output_dir={out}", f"data.cache_dir={cache}", *TINY, *extra]


# ---- outputs ------------------------------------------------------------------------------
def read_metrics(out: Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def loss_rows(out: Path, stage: str) -> list[dict]:
    return [r for r in read_metrics(out) if r.get("stage") == stage and "loss" in r]


def losses_by_step(out: Path, stage: str) -> dict[int, float]:
    rows = loss_rows(out, stage)
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"{stage}: a step logged more than once: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def max_logged_step(out: Path, stage: str) -> int:
    try:
        rows = loss_rows(out, stage)
    except (ValueError, OSError):  # a line being written right now
        return 0
    return max((r["step"] for r in rows), default=0)


def read_results(out: Path) -> dict:
    return json.loads((Path(out) / "results.json").read_text())


def assert_accuracies(block: dict, domains: list[str]) -> None:
    for split in ("dev", "test"):
        acc = block[split]
        assert set(acc) == set(domains) | {"average"}, acc
        for v in acc.values():
            assert 0.0 <= v <= 1.0, acc
        assert abs(acc["average"] - sum(acc[d] for d in domains) / len(domains)) < 1e-9


def assert_ok(res: Result, what: str = "run") -> None:
    assert res.rc == 0, f"{what} exited {res.rc} after {res.seconds:.0f}s:\n{res.tail()}"
