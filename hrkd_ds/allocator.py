"""glibc malloc's policy for a CPU run, so that its memory does not climb step after step
(`train.malloc_trim_every`, `train.malloc_mmap_threshold_kib`).

Why: episodes pad to their longest row, so activation tensors change shape every step. glibc
serves blocks above its mmap threshold with mmap and returns them on free, but the threshold is
dynamic: each freed mmapped block raises it to that block's size (up to 32 MiB), after which
tensors of that size come from the heap, whose free space fragments across shapes and stays
resident. On the sample's default job (tools/bench_allocator.py, 2-core CPU, docs/BENCHMARKS.md)
peak RSS grows 9.2 MB a step under glibc's defaults; grid cells grew 5-20 MB a step (kd-aug
`L4H192sel`: 2.7 -> 10.7 GB in 400 steps). Two remedies, measured side by side:
- trimming (malloc_trim every 10 steps, the default): 4.1 MB a step, no slower;
- a pinned threshold (1 MiB or 256 KiB): flat (0.1-0.2 MB a step) but 1.6-1.8x the step time,
  every large tensor then being a fresh mmap whose pages fault in; so it is opt-in.
`mallopt` and `malloc_trim` act at run time (nothing to export before the process starts). The
GPU's caching allocator is not affected; without glibc (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc malloc.h: release the heap's top above this many free bytes
M_MMAP_THRESHOLD = -3  # glibc malloc.h: blocks this large or larger are mmapped
MAX_KIB = 32 * 1024  # glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None


_trim_every = 0  # steps between malloc_trim calls (train.malloc_trim_every); one heap per process, so one setting


def configure(mmap_threshold_kib: int, trim_every: int) -> None:
    """The process's allocator policy, set once at start-up from the run's `train` config."""
    global _trim_every
    _trim_every = max(trim_every, 0)
    pin_mmap_threshold(mmap_threshold_kib)


def after_step(step: int) -> None:
    """Called by the training loop after each step: every `trim_every` steps, hand the heap's free
    pages back to the system (malloc_trim), so less of a fragmented heap stays resident (about half, measured)."""
    if _trim_every and step % _trim_every == 0:
        release_free_memory()


def release_free_memory() -> bool:
    """glibc's malloc_trim(0): every whole free page in the heap is returned (madvise), not only its
    top. True when it gave memory back; False when nothing was freed or there is no glibc."""
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def pin_mmap_threshold(kib: int) -> bool:
    """Serve blocks of >= `kib` KiB with mmap from now on, and trim the heap's free top above twice
    that; 0 keeps glibc's dynamic default. True when glibc took both settings."""
    if kib <= 0:
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, kib * 1024) == 1 and mallopt(M_TRIM_THRESHOLD, 2 * kib * 1024) == 1
