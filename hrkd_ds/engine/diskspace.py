"""A full disk is one line: the directory, the bytes the write needs and the bytes free, exit 6.

Writers fail on a full disk in several shapes: `OSError(ENOSPC)` from Python, torch.save's
"PytorchStreamWriter failed writing file" / "unexpected pos" RuntimeError, safetensors'
"No space left on device (os error 28)". `is_disk_full` recognises all of them (anywhere in the
exception's chain) so the trainer can say what happened instead of printing a 40-line traceback.
Checkpoints are sized in advance (`checkpoint_bytes`): the parameters, their Adam state and the
fp32 master copy ZeRO keeps, which is what DeepSpeed writes, so a stage can refuse to start when
not even one checkpoint fits, and warn when the checkpoints it keeps will not.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import torch

from hrkd_ds.errors import EXIT_DISK_FULL, RunStopped

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
FULL_PATTERNS = re.compile(r"No space left on device|os error 28|StorageFull|Disk quota exceeded|"
                           r"PytorchStreamWriter failed writing file|unexpected pos \d+")
ADAM_STATE_BYTES = 12  # fp32 master copy + exp_avg + exp_avg_sq per parameter (ZeRO keeps the master even in fp32)
FILE_OVERHEAD = 64 << 10  # pickle/zip framing per file, what a tiny model's checkpoint is made of


class DiskFull(RunStopped):
    """No room for a checkpoint, an export or the metrics. Nothing half-written is left named:
    LATEST and the previous checkpoint, the previous export, stay as they were."""

    code_for = EXIT_DISK_FULL


def is_disk_full(exc: BaseException | None) -> bool:
    """True if `exc` or anything it was raised from is a write that found no space."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return True
        if FULL_PATTERNS.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: str | Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem of `path` (or of its nearest
    existing parent: the directory may not exist yet)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def human(n: int | None) -> str:
    if n is None:
        return "an unknown number of bytes"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def _numel(p: torch.nn.Parameter) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 keeps only a partition in p.data


def model_bytes(module: torch.nn.Module) -> int:
    """The weights as written (their own dtype), whole even when ZeRO-3 partitions them."""
    return sum(_numel(p) * p.element_size() for p in module.parameters())


def checkpoint_bytes(module: torch.nn.Module, world_size: int) -> int:
    """About what one DeepSpeed checkpoint of `module` takes, summed over ranks: the weights, the
    optimizer's fp32 state of the trained ones, one RNG file per rank and per-file framing."""
    trained = sum(_numel(p) for p in module.parameters() if p.requires_grad)
    return model_bytes(module) + ADAM_STATE_BYTES * trained + FILE_OVERHEAD * (2 + 2 * world_size)


def tag_bytes(tag_dir: Path) -> int:
    """What an existing checkpoint directory takes (the best estimate of the next one)."""
    return sum(f.stat().st_size for f in tag_dir.rglob("*") if f.is_file())


def message(what: str, directory: str | Path, need: int | None, free: int | None = None, after: str = "") -> str:
    """The one line: what could not be written where, how much it needs, how much is free."""
    free = free_bytes(directory) if free is None else free
    need_text = f"needs about {human(need)} ({need} bytes)" if need is not None else "needs more than is free"
    return (f"no space left on device for {what} in {directory}: it {need_text}, {human(free)} ({free} bytes) free"
            f"{after}; free space there (or set output_dir elsewhere) and relaunch to resume")


def error_directory(exc: BaseException, fallback: str | Path) -> str:
    """The directory a failed write named (OSError.filename), else `fallback`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = getattr(exc, "filename", None)
        if isinstance(name, (str, bytes, os.PathLike)) and str(name):
            path = Path(os.fsdecode(name))
            return str(path if path.is_dir() else path.parent)
        exc = exc.__cause__ or exc.__context__
    return str(fallback)
