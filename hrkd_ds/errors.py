"""User-facing errors: one line, exit code 2, no traceback."""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from typing import Iterator

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input from the user (config, data file, CLI); reported as one line, exit code 2."""


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
