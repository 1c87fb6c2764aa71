"""The trainer's exit codes, declared once, and user-facing errors: one line, no traceback.

Every way the trainer stops on purpose has its own code, so a job script can tell what to do
without reading logs: `slurm/distill.sh` requeues REQUEUE_EXIT_CODES and fails the job on the
others (tests/slurm/test_exit_codes.py holds the script's copies equal to these).
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from typing import Iterator

EXIT_USAGE = 2  # bad input (config, data file, CLI, output_dir): nothing was written
EXIT_PREEMPTED = 3  # SIGUSR1/SIGTERM: checkpoint written, relaunch resumes
EXIT_DIVERGED = 4  # non-finite loss or weights: the last checkpoint is the newest good state
EXIT_COLLECTIVE_TIMEOUT = 5  # a rank did not answer within train.collective_timeout_s: relaunch resumes
EXIT_DISK_FULL = 6  # no space for a checkpoint, export or metrics: free space, then relaunch

EXIT_CODES = {"usage": EXIT_USAGE, "preempted": EXIT_PREEMPTED, "diverged": EXIT_DIVERGED,
              "collective_timeout": EXIT_COLLECTIVE_TIMEOUT, "disk_full": EXIT_DISK_FULL}
# a relaunch of the same command can succeed without anyone changing anything
REQUEUE_EXIT_CODES = (EXIT_PREEMPTED, EXIT_COLLECTIVE_TIMEOUT)


class UserError(Exception):
    """Bad input from the user (config, data file, CLI); reported as one line, exit code 2."""


class RunStopped(SystemExit):
    """A deliberate stop with its exit code and the one line that says why (printed once, by the
    trainer's entry point, so library code never writes to the console on its way out)."""

    code_for: int = 1

    def __init__(self, message: str, together: bool = True) -> None:
        super().__init__(self.code_for)
        self.message = message
        # True: every rank decided this stop in step, the main rank alone prints and they leave
        # together; False: this rank alone knows, it prints and leaves without waiting for the others
        self.together = together


@contextmanager
def exit_on_user_error(prog: str = "hrkd_ds", debug: bool = False) -> Iterator[None]:
    """Turn a UserError raised inside the block into a one-line message and `sys.exit(2)`;
    with `debug` the traceback comes first, for when the line is not enough to find the cause."""
    try:
        yield
    except UserError as err:
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
