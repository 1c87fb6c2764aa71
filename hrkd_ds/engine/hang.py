"""A rank that stopped answering: the survivors stop in minutes, say where, and are requeued.

Every collective gives up after `train.collective_timeout_s` (engine/distributed.py). When one
does, the rank it raised on names the stage and step it was at (engine/where.py) and, where the
rendezvous store still answers, the ranks that did not check in after the timeout: every survivor
writes its key, waits a few seconds for the others, and lists the missing ones. The exit code,
EXIT_COLLECTIVE_TIMEOUT, is one slurm/distill.sh requeues; the relaunch resumes from the last
checkpoint, which a timed-out collective never half-writes (LATEST moves only after a full save).

The NCCL backend's watchdog aborts a rank on the same timeout instead of raising (torch's
TORCH_NCCL_ASYNC_ERROR_HANDLING): that path ends the process (SIGABRT) without this line, with
torch's own "Watchdog caught collective operation timeout" line in the rank's log, which
slurm/distill.sh counts as this exit code. TORCH_NCCL_BLOCKING_WAIT=1 is meant to raise it in
Python instead (a DistBackendError that says "timed out", recognised below), at the price of the
host blocking on every collective: not set by us, and untested (no GPU here).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import torch

from hrkd_ds.engine.where import NOW
from hrkd_ds.errors import EXIT_COLLECTIVE_TIMEOUT, RunStopped

# gloo's words for a peer that did not answer in time; NCCL's watchdog; any torch.distributed
# error (backend or store) that says it timed out. A DataLoader's or a download's timeout is not one.
GLOO_TIMEOUT = re.compile(r"Timed out waiting \d+ ?ms for (recv|send) operation|Application timeout caused pair closure|"
                          r"Watchdog caught collective operation timeout")
DIST_TIMEOUT = re.compile(r"time(d)? ?out", re.IGNORECASE)
CHECK_IN_KEY = "hrkd/alive-after-timeout/{rank}"


class CollectiveTimeout(RunStopped):
    """Printed by every surviving rank: each may be the only one left to say it."""

    code_for = EXIT_COLLECTIVE_TIMEOUT


def is_collective_timeout(exc: BaseException | None) -> bool:
    """A collective (or the rendezvous store) gave up waiting for another rank."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RuntimeError) and GLOO_TIMEOUT.search(str(exc)):
            return True
        if isinstance(exc, torch.distributed.DistError) and DIST_TIMEOUT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def silent_ranks(rank: int, world_size: int, grace_s: float) -> list[int] | None:
    """Ranks that did not check in through the rendezvous store within `grace_s` seconds of this
    one; None when the store itself does not answer (it lives with rank 0 under a plain srun)."""
    try:
        store = torch.distributed.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=max(1.0, grace_s)))
        store.set(CHECK_IN_KEY.format(rank=rank), "1")
        keys = {r: CHECK_IN_KEY.format(rank=r) for r in range(world_size)}
        deadline = time.monotonic() + grace_s
        missing = [r for r in keys if r != rank]
        while missing and time.monotonic() < deadline:
            missing = [r for r in missing if not store.check([keys[r]])]
            if missing:
                time.sleep(0.2)
        return missing
    except Exception:  # noqa: BLE001  the store went with the hung rank: say so instead
        return None


def timeout_stop(rank: int, world_size: int, timeout_s: float, grace_s: float = 5.0) -> CollectiveTimeout:
    """The stop to raise on this rank after a collective timed out."""
    silent = silent_ranks(rank, world_size, grace_s) if world_size > 1 else []
    if silent is None:
        who = "the rank that did not answer is unknown (the rendezvous store does not answer either: rank 0's host?)"
    elif silent:
        who = f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} did not answer"
    else:
        who = "every rank answered after the timeout (a slow step, not a hung rank?)"
    return CollectiveTimeout(
        f"collective timeout at {NOW.describe()} on rank {rank}: {who} within train.collective_timeout_s="
        f"{timeout_s:g}; stopping (exit {EXIT_COLLECTIVE_TIMEOUT}): relaunch to resume from the last checkpoint",
        together=False)
