"""glibc malloc's mmap threshold, pinned so that a CPU run's memory stays flat (`train.malloc_mmap_threshold_kib`).

Why: episodes pad to their longest row, so activation tensors change shape every step. glibc
serves blocks above its mmap threshold with mmap and returns them on free, but the threshold is
dynamic: each freed mmapped block raises it to that block's size (up to 32 MiB), after which
tensors of that size come from the heap, whose free space fragments across shapes and is never
given back. Measured on the sample's default teacher stage (2-core CPU): peak RSS 1170 -> 1976 MB
over 120 steps and still climbing under the dynamic threshold, 877 -> 890 MB pinned at 64 KiB;
grid cells grew by 5-20 MB a step (docs/BENCHMARKS.md, tools/bench_allocator.py). `mallopt`
pins it at run time (no environment variable to export before the process starts) and turns the
dynamic adjustment off. The GPU's caching allocator is not affected; elsewhere than glibc (musl,
macOS) there is no mallopt and this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc malloc.h: release the heap's top above this many free bytes
M_MMAP_THRESHOLD = -3  # glibc malloc.h: blocks this large or larger are mmapped
MAX_KIB = 32 * 1024  # glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None


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
