"""Offline teacher targets: the frozen teacher's logits for every training row of the (augmented)
transfer set, computed once and memory-mapped from the data cache (`transfer.teacher_targets: cached`).

A recipe whose terms read only `teacher_logits`, `labels` and `pooled` then needs no teacher
forward per step and no teacher engine at all: the step reads `batch["teacher_logits"]` (and,
for the pooled term, `batch["teacher_pooled"]`, the teacher's last-layer state at position 0:
one H_t vector per row, stored beside the logits as the row's last H_t columns; distill/step.py).
Layer-wise terms need the teacher's per-token states (about 2 MB per example at BERT-base), so
those recipes stay online.

Key = hash(teacher weights and config, the training rows with their augmented copies, max_seq_len,
padding, the teacher's compute precision, whether the pooled states are stored): a changed
teacher or augmentation setting misses. The
rows are the teacher's own encoding when it has its own tokenizer (teacher.tokenizer,
StageContext.teacher_view), so the key and the logits follow the teacher's tokenisation; the
file is checksummed (data/checked_cache.py) and a damaged one is rebuilt, never used.

The one-off forward is rank-sharded through the stage's own teacher engine: rank r labels rows
r::W of each domain, every rank runs the same number of forwards (a ZeRO-3 teacher's forward is a
collective), rank 0 gathers the pieces and writes the file, every rank then maps it. Sharding uses
all W devices, works for a teacher too large for one device, and keeps the other ranks inside a
collective for 1/W of the time a rank-0-only forward would.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from hrkd_ds.data.augment import rows_hash
from hrkd_ds.data.checked_cache import DamagedCache, read_arrays, write_arrays
from hrkd_ds.data.collate import pad_rows
from hrkd_ds.distill.term_registry import active_terms

_FORMAT_VERSION = "targets-1"
CACHED_READS = frozenset({"teacher_logits", "labels", "pooled"})  # what the cache can stand in for
FORWARD_BATCH = 64  # rows per teacher forward while labelling


def cacheable(weights: dict, task_head: bool = True) -> bool:
    """Every active term reads only what the cache holds: logits, labels, pooled states (no
    per-token states or maps)."""
    terms = active_terms(weights, task_head=task_head)
    return bool(terms) and all(t.reads <= CACHED_READS for t, _ in terms)


def reads_pooled(weights: dict, task_head: bool = True) -> bool:
    """Some active term reads the teacher's pooled state: the cache then stores it too."""
    return any("pooled" in t.reads for t, _ in active_terms(weights, task_head=task_head))


def split_columns(arrays: Sequence[np.ndarray], num_labels: int, pooled: bool):
    """(logits, pooled) per domain from the stored rows: the first C columns, then the H_t
    pooled ones (None when not stored); views of the memory map, nothing copied."""
    return [a[:, :num_labels] for a in arrays], ([a[:, num_labels:] for a in arrays] if pooled else None)


def teacher_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the export's config.json and weight files (names and bytes)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    files = [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors")), *sorted(model_dir.glob("pytorch_model*.bin"))]
    for f in files:
        if f.is_file():
            h.update(f"\x1e{f.name}\x1d".encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def targets_key(teacher_fp: str, train: Sequence, max_seq_len: int, pad_to: str, precision: str, pooled: bool = False) -> str:
    parts = [_FORMAT_VERSION, teacher_fp, rows_hash(list(train)), str(max_seq_len), pad_to, precision]
    parts += ["pooled"] if pooled else []  # a logits-only file keeps its key
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def label_rows(forward: Callable[[dict], torch.Tensor], train: Sequence, pad_id: int, rank: int, world_size: int,
               device, pad_length: int | None = None, batch: int = FORWARD_BATCH) -> list[np.ndarray] | None:
    """The teacher's float32 logits (n_d, C) per domain on rank 0 (None elsewhere): rank r labels
    rows r::W in equal-count forwards (a short last piece is padded with row 0 and dropped)."""
    mine: list[np.ndarray] = []
    for d, ds in enumerate(train):
        rows = np.arange(len(ds))[rank::world_size]
        steps = math.ceil(math.ceil(len(ds) / world_size) / batch)
        out = []
        for s in range(steps):
            idx = rows[s * batch:(s + 1) * batch].tolist()
            real = len(idx)
            idx = idx or [0]  # every rank runs every forward: keep the collective count equal
            part = ds.select_columns(["input_ids", "attention_mask", "token_type_ids"])[idx]
            inputs = {k: v.to(device) for k, v in pad_rows(part, pad_id, pad_length).items()}
            inputs["domain_ids"] = torch.full((len(idx),), d, dtype=torch.long, device=device)
            with torch.no_grad():
                logits = forward(inputs).float().cpu().numpy()
            out.append(logits[:real])
        mine.append(np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32))
    pieces = [mine]
    if world_size > 1:
        pieces = [None] * world_size
        torch.distributed.all_gather_object(pieces, mine)
    if rank != 0:
        return None
    full = []
    for d, ds in enumerate(train):
        C = next(p[d].shape[1] for p in pieces if p[d].size)
        arr = np.zeros((len(ds), C), dtype=np.float32)
        for r, p in enumerate(pieces):
            if p[d].size:
                arr[r::world_size] = p[d]
        full.append(arr)
    return full


def load_or_build(final: Path, train: Sequence, build: Callable[[], list[np.ndarray] | None], rank: int,
                  agree: Callable[[bool], bool], barrier: Callable[[], None]) -> tuple[list[np.ndarray], bool]:
    """(memory-mapped logits per domain, whether they were built now). Rank 0 decides hit or miss
    (`agree` makes every rank follow it); on a miss every rank runs `build` and rank 0 writes."""
    sizes = [len(ds) for ds in train]
    miss = False
    if rank == 0:
        try:
            found = read_arrays(final)
            miss = found is None or [found[0][f"domain{d}"].shape[0] for d in range(len(sizes))] != sizes
        except (DamagedCache, KeyError) as err:
            print(f"[hrkd] cached teacher targets damaged, rebuilding: {err}", flush=True)
            miss = True
    miss = agree(miss)
    if miss:
        logits = build()
        if rank == 0:
            write_arrays(final, {f"domain{d}": a for d, a in enumerate(logits)}, {"sizes": sizes})
        barrier()
    found = read_arrays(final, mmap=True)  # every rank checks what it maps
    if found is None:
        raise DamagedCache(f"{final}: cached teacher targets missing after they were written")
    return [found[0][f"domain{d}"] for d in range(len(sizes))], miss


def describe(final: Path) -> str:
    meta = json.loads((final / "meta.json").read_text())
    return f"{final} ({sum(meta['sizes'])} rows)"
