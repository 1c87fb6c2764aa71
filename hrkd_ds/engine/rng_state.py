"""A checkpoint's RNG state: Python, numpy, torch (and CUDA) generators as plain arrays in an .npz,
stored without pickle so that only DeepSpeed's own checkpoint files are ever unpickled."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch


def rng_arrays() -> dict[str, np.ndarray]:
    """Python, numpy, torch (and CUDA) generator states as plain arrays."""
    version, py_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()  # always MT19937 for the legacy global generator
    arrays = {
        "python": np.array([version, *py_state], dtype=np.int64),
        "python_gauss": np.array([] if gauss is None else [gauss], dtype=np.float64),
        "numpy_keys": np.asarray(keys, dtype=np.uint32),
        "numpy_rest": np.array([pos, has_gauss, cached], dtype=np.float64),
        "torch": torch.get_rng_state().numpy(),
    }
    if torch.cuda.is_available():
        arrays["cuda"] = torch.cuda.get_rng_state().numpy()
    return arrays


def set_rng_arrays(a: dict[str, np.ndarray]) -> None:
    py = [int(x) for x in a["python"]]
    gauss = float(a["python_gauss"][0]) if a["python_gauss"].size else None
    random.setstate((py[0], tuple(py[1:]), gauss))
    pos, has_gauss, cached = a["numpy_rest"]
    np.random.set_state(("MT19937", a["numpy_keys"], int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(torch.from_numpy(np.array(a["torch"], dtype=np.uint8)))
    if "cuda" in a and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.from_numpy(np.array(a["cuda"], dtype=np.uint8)))


def save_rng(path: Path) -> None:
    """This process's generator states into an .npz (no pickle: only DeepSpeed's files are unpickled)."""
    buf = io.BytesIO()
    np.savez(buf, **rng_arrays())
    path.write_bytes(buf.getvalue())


def load_rng(path: Path) -> None:
    with np.load(path, allow_pickle=False) as f:
        set_rng_arrays({k: f[k] for k in f.files})
