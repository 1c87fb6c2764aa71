"""Crash-safe training checkpoints: DeepSpeed engine state plus sampler, RNG and progress.

DeepSpeed writes the tag directory; only after every rank has finished (barrier) does rank 0
atomically point `LATEST` at it. A save interrupted half-way therefore leaves the previous
pointer, and the previous checkpoint, untouched. Older tags are pruned after the pointer moves.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrkd_ds.engine.distributed import barrier
from hrkd_ds.io import atomic_write_text

POINTER = "LATEST"
KEEP = 2


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_tag(ckpt_dir: str | Path) -> str | None:
    """The tag of the last complete checkpoint, or None when there is none."""
    pointer = Path(ckpt_dir) / POINTER
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    return tag if (Path(ckpt_dir) / tag).is_dir() else None


def _fresh_tag(ckpt_dir: Path, step: int) -> str:
    """`stepN`, or `stepN.k` when that name is taken: never overwrite what LATEST may point at."""
    tag, k = f"step{step:08d}", 0
    while (ckpt_dir / tag).exists():
        k += 1
        tag = f"step{step:08d}.{k}"
    return tag


def save(engine, ckpt_dir: str | Path, step: int, progress: dict[str, Any], rank: int) -> str:
    """Save engine + progress (identical on all ranks) + this rank's RNG; then move the pointer."""
    ckpt_dir = Path(ckpt_dir)
    names = [_fresh_tag(ckpt_dir, step) if rank == 0 else None]
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(names, src=0)  # one name even without a shared view
    tag = names[0]
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"progress": progress}, save_latest=False)
    torch.save(_rng_state(), ckpt_dir / tag / f"rng_rank{rank}.pt")
    barrier()
    if rank == 0:
        atomic_write_text(ckpt_dir / tag / "progress.json", json.dumps(progress))
        atomic_write_text(ckpt_dir / POINTER, tag)
        tags = sorted(p.name for p in ckpt_dir.glob("step*") if p.is_dir())
        for old in tags[:-KEEP]:
            if old != tag:
                shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    barrier()
    return tag


def load(engine, ckpt_dir: str | Path, rank: int) -> dict[str, Any] | None:
    """Restore the latest complete checkpoint; returns its progress dict, or None if none exists."""
    tag = latest_tag(ckpt_dir)
    if tag is None:
        return None
    _, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_strict=True)
    if client is None:
        raise RuntimeError(f"checkpoint {Path(ckpt_dir) / tag} could not be loaded")
    rng_file = Path(ckpt_dir) / tag / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return client["progress"]
