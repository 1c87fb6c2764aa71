"""The pinned mmap threshold (hrkd_ds/allocator.py), observed through glibc's own counters in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# After a freed 4 MiB block the dynamic threshold sits at 4 MiB, so a 1 MiB block comes from the
# heap; pinned at 64 KiB it is mmapped (and given back when freed). Prints the new mmapped blocks.
PROBE = """
import ctypes, sys
from hrkd_ds.allocator import _libc, pin_mmap_threshold
libc = _libc()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
pinned = pin_mmap_threshold(int(sys.argv[1]))
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(pinned, libc.mallinfo2().hblks - before)
"""


def _probe(kib: int) -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    res = subprocess.run([sys.executable, "-c", PROBE, str(kib)], cwd=REPO, capture_output=True, text=True, timeout=60)
    if "mallinfo2" in res.stderr:
        pytest.skip("glibc older than 2.33 (no mallinfo2)")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_dynamic_default_serves_a_block_under_the_raised_threshold_from_the_heap():
    assert _probe(0) == ["False", "0"]


def test_pinned_threshold_mmaps_it():
    assert _probe(64) == ["True", "1"]


TRIM = """
import ctypes, os
from hrkd_ds.allocator import _libc, release_free_memory
libc = _libc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
blocks = [libc.malloc(64 << 10) for _ in range(128)]  # 8 MiB of heap blocks (under the 128 KiB default threshold)
for b in blocks:
    ctypes.memset(b, 1, 64 << 10)  # resident
keep = libc.malloc(64 << 10)  # from the top, above them: the freed blocks are a hole, not the heap's top
for b in blocks:
    libc.free(b)
before = rss()
released = release_free_memory()
print(released, (before - rss()) >> 20)
"""


def test_release_gives_a_free_hole_in_the_heap_back():
    """Freed blocks below a live one stay resident (no top to trim) until malloc_trim returns them."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    res = subprocess.run([sys.executable, "-c", TRIM], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    released, mib = res.stdout.split()
    assert released == "True" and int(mib) >= 7, res.stdout


def test_after_step_trims_every_n_steps(monkeypatch):
    from hrkd_ds import allocator

    calls = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(allocator, "_trim_every", 0)
    allocator.configure(0, 3)
    for step in range(1, 10):
        allocator.after_step(step)
    assert len(calls) == 3  # steps 3, 6, 9
    allocator.configure(0, 0)
    allocator.after_step(12)
    assert len(calls) == 3
