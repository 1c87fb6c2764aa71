"""SIGUSR1/SIGTERM -> checkpoint at the next step boundary, then EXIT_PREEMPTED so the job script requeues."""

from __future__ import annotations

import signal

from hrkd_ds.errors import EXIT_PREEMPTED  # noqa: F401  re-exported: the loop raises it from here


class PreemptionFlag:
    """Set by the signal handler, read (and agreed on by all ranks) at each step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def install(self) -> "PreemptionFlag":
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.requested = True
        self.signum = signum
        # The request is recorded; repeats (the job script re-sends until the ranks stop) must
        # not find the default action during interpreter shutdown, where Python restores it.
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
