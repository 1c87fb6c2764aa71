"""Stand-in for hrkd_ds/train.py that honours the trainer's launch/preemption contract, fast.

    python tests/slurm/fake_trainer.py [--config Y] [--deepspeed J] [key.sub=value ...]

- ranks from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, torch.distributed with gloo;
- stages from `stages=` (default teacher,distill), `<stage>_train.max_steps` steps each
  (default 5), `fake.step_sleep` seconds per step (default 0.5), `output_dir=`;
- every step: sleep, all_reduce, rank 0 appends {"stage","step",...} to metrics.jsonl;
- SIGUSR1/SIGTERM: the flag is all-reduced at each step boundary so every rank stops after the
  same step; then checkpoint.json is written atomically and every rank exits 3;
- relaunched, it resumes after the step recorded in checkpoint.json; results.json at the end;
- `fake.hang_rank=R fake.hang_step=N` (first run only): rank R SIGSTOPs itself before step N's
  all_reduce, as a wedged rank would; every step is then checkpointed, the process group's
  timeout is `train.collective_timeout_s`, and the survivors leave as the trainer does
  (hrkd_ds.engine.hang: one line, EXIT_COLLECTIVE_TIMEOUT).
Other overrides are accepted and ignored.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import tempfile
import time

import torch
import torch.distributed as dist

from hrkd_ds.engine.where import NOW
from hrkd_ds.errors import EXIT_PREEMPTED  # the trainer's code (stdlib-only module: cheap to import)
_stop = False


def _on_signal(signum, _frame):
    global _stop
    _stop = True
    print(f"[fake_trainer] rank {os.environ.get('RANK')} got signal {signum}", flush=True)
    # as hrkd_ds/engine/preemption.py: the job script's repeats must not meet the default action
    # that Python restores for its handlers at shutdown (a slow exit under load died of USR1, 138)
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _atomic_json(path: str, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    opts: dict[str, str] = {}
    it = iter(argv)
    for a in it:
        if a in ("--config", "--deepspeed"):
            opts[a] = next(it)
        elif "=" in a:
            k, v = a.split("=", 1)
            opts[k] = v
        elif a.startswith("--local_rank"):
            continue
        else:
            print(f"fake_trainer: unexpected argument {a!r}", file=sys.stderr)
            return 2
    out = opts.get("output_dir", "runs/fake")
    stages = [s.strip() for s in opts.get("stages", "teacher,distill").strip("[]").split(",") if s.strip()]  # as the trainer: a,b or [a,b]
    sleep = float(opts.get("fake.step_sleep", "0.5"))
    teacher_from = opts.get("teacher_from", "")
    if teacher_from and not os.path.isdir(teacher_from):
        print(f"fake_trainer: error: teacher_from {teacher_from!r} is not a directory", file=sys.stderr)
        return 2
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    restart = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    hang_rank = int(opts.get("fake.hang_rank", -1)) if restart == 0 else -1
    hang_step = int(opts.get("fake.hang_step", 0))
    timeout_s = float(opts.get("train.collective_timeout_s", 120))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        return _train(opts, out, stages, sleep, teacher_from, rank, world, restart, hang_rank, hang_step)
    except RuntimeError as err:
        from hrkd_ds.engine import hang
        from hrkd_ds.errors import EXIT_COLLECTIVE_TIMEOUT

        if not hang.is_collective_timeout(err):
            raise
        print(f"hrkd_ds: error: {hang.timeout_stop(rank, world, timeout_s).message}", file=sys.stderr, flush=True)
        dist.destroy_process_group()
        return EXIT_COLLECTIVE_TIMEOUT


def _train(opts, out, stages, sleep, teacher_from, rank, world, restart, hang_rank, hang_step) -> int:
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "checkpoint.json")
    ckpt = {"stage_index": 0, "step": 0}
    if os.path.exists(ckpt_path):
        with open(ckpt_path) as f:
            ckpt = json.load(f)
        print(f"[fake_trainer] rank {rank} resuming from {ckpt}", flush=True)
    for si in range(ckpt["stage_index"], len(stages)):
        stage = stages[si]
        max_steps = int(opts.get(f"{stage}_train.max_steps", "5") or 5)
        start = ckpt["step"] if si == ckpt["stage_index"] else 0
        NOW.enter_stage(stage)
        for step in range(start + 1, max_steps + 1):
            NOW.step = step
            time.sleep(sleep)
            if rank == hang_rank and step == hang_step:
                print(f"[fake_trainer] rank {rank} hangs before {stage} step {step}", flush=True)
                os.kill(os.getpid(), signal.SIGSTOP)
            t = torch.tensor([float(rank + step)])
            dist.all_reduce(t)
            if rank == 0:
                line = {"stage": stage, "step": step, "world_size": world, "sum": t.item(),
                        "restart": restart, "time": time.time()}
                with open(os.path.join(out, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(line) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            if hang_rank >= 0 and rank == 0:  # resume right after the last step every rank finished
                _atomic_json(ckpt_path, {"stage_index": si, "step": step} if step < max_steps else {"stage_index": si + 1, "step": 0})
            flag = torch.tensor([1.0 if _stop else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            last = si == len(stages) - 1 and step == max_steps
            if flag.item() > 0 and not last:
                nxt = {"stage_index": si, "step": step} if step < max_steps else {"stage_index": si + 1, "step": 0}
                if rank == 0:
                    _atomic_json(ckpt_path, nxt)
                dist.barrier()
                print(f"[fake_trainer] rank {rank} preempted after {stage} step {step}: checkpointed", flush=True)
                dist.destroy_process_group()
                return EXIT_PREEMPTED
    if rank == 0:
        _atomic_json(os.path.join(out, "results.json"), {"stages": stages, "world_size": world, "restarts": restart,
                                                               "teacher_from": teacher_from})
        _atomic_json(ckpt_path, {"stage_index": len(stages), "step": 0})
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
