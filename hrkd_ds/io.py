"""Atomic file writes: a crash mid-write never replaces a good file with a half-written one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that wants a file name (pandas, matplotlib);
    it is fsynced and renamed over `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """JSON flavour of `atomic_write_text`."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _old_copy(final_dir: Path) -> Path:
    return final_dir.with_name(f".{final_dir.name}.old")


def recover_dir(final_dir: str | Path) -> None:
    """Undo a swap interrupted between its two renames: the previous copy takes its name back."""
    final_dir = Path(final_dir)
    old = _old_copy(final_dir)
    if not final_dir.exists() and old.is_dir():
        try:
            os.replace(old, final_dir)
        except FileNotFoundError:  # another rank on the same filesystem recovered it first
            pass


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Swap a fully written `tmp_dir` into `final_dir`; the old copy is removed only afterwards.

    Between the two renames only `.<name>.old` exists; `recover_dir` restores it after a crash.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    recover_dir(final_dir)
    old = _old_copy(final_dir)
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)
