"""A directory of numpy arrays written once, atomically, with a checksum per file verified on load.

The transfer set (data/augment.py) and the cached teacher targets (distill/teacher_targets.py) live
in such directories under the data cache, keyed by what fixes their contents. A damaged file (a
bit flip, a truncation, a hand edit) must never be used silently: `read_arrays` raises
`DamagedCache`, and the caller rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

META = "meta.json"


class DamagedCache(Exception):
    """A cached file's checksum or shape does not match its meta.json."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_arrays(final: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """`<name>.npy` per array plus meta.json (checksums, shapes, `meta`), renamed into place whole;
    a damaged copy already there is replaced."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        files = {}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            files[name] = {"sha256": file_sha256(tmp / f"{name}.npy"), "shape": list(arr.shape), "dtype": str(arr.dtype)}
        (tmp / META).write_text(json.dumps({**meta, "files": files}, indent=1, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_arrays(final: Path, mmap: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, meta) when `final` is complete and every checksum matches; None when absent;
    DamagedCache when a file is missing, unreadable or differs from its recorded checksum/shape."""
    meta_path = final / META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {}
        for name, rec in meta["files"].items():
            path = final / f"{name}.npy"
            if not path.is_file() or file_sha256(path) != rec["sha256"]:
                raise DamagedCache(f"{path}: checksum differs from {meta_path}")
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            if list(arr.shape) != rec["shape"] or str(arr.dtype) != rec["dtype"]:
                raise DamagedCache(f"{path}: shape/dtype differ from {meta_path}")
            arrays[name] = arr
    except (ValueError, KeyError, OSError, TypeError) as err:
        raise DamagedCache(f"{final}: unreadable ({type(err).__name__}: {err})") from None
    return arrays, meta
