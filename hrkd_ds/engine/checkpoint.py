"""Crash-safe, verified training checkpoints: DeepSpeed engine state plus sampler, RNG and progress.

DeepSpeed writes the tag directory; only after every rank has finished (barrier) does rank 0
record the size and sha256 of every file in `MANIFEST.json` and then atomically point `LATEST`
at the tag. A save interrupted half-way therefore leaves the previous pointer, and the previous
checkpoint, untouched. Older tags are pruned after the pointer moves.

On resume the manifest is checked before anything is loaded (DeepSpeed unpickles its .pt files):
a truncated or altered checkpoint is renamed `damaged-<tag>` and the previous intact one is
used; a save that never finished (no manifest, not named by `LATEST`) is removed, so a kill
during a stage's first save restarts that stage.
Our own RNG state is stored without pickle (engine/rng_state.py), so only DeepSpeed's files are ever unpickled.

Disk space (engine/diskspace.py): a stage starts only if one checkpoint fits (and warns when the
KEEP it holds plus the one being written will not); a save that runs out of space anyway is
agreed on by every rank, its half-written tag removed, and ends the run with DiskFull naming the
directory, the bytes needed and free, while LATEST and the previous checkpoint stay as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from hrkd_ds.engine import diskspace, hang
from hrkd_ds.engine.rng_state import load_rng, save_rng
from hrkd_ds.engine.distributed import barrier
from hrkd_ds.engine.where import NOW
from hrkd_ds.errors import UserError
from hrkd_ds.io import atomic_write_text

POINTER = "LATEST"
MANIFEST = "MANIFEST.json"
KEEP = 2
DAMAGED_PREFIX = "damaged-"


# ---------------------------------------------------------------- manifest
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(tag_dir: Path) -> None:
    """Size and sha256 of every file under the tag, written atomically (last file of a save)."""
    files = sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    entries = {str(p.relative_to(tag_dir)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    atomic_write_text(tag_dir / MANIFEST, json.dumps({"files": entries}, indent=1, sort_keys=True))


def verify(tag_dir: Path) -> str | None:
    """None when every file matches the manifest, else what is wrong (one phrase)."""
    try:
        entries = json.loads((tag_dir / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (an interrupted save, or written by an older version)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable {MANIFEST} ({err})"
    for name, want in entries.items():
        p = tag_dir / name
        if not p.is_file():
            return f"{name} is missing"
        size = p.stat().st_size
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} expected (truncated?)"
        if _sha256(p) != want["sha256"]:
            return f"{name} does not match its sha256 checksum"
    return None


# ---------------------------------------------------------------- tags
def latest_tag(ckpt_dir: str | Path) -> str | None:
    """The tag LATEST points at when that directory exists, else None (not yet verified)."""
    pointer = Path(ckpt_dir) / POINTER
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    return tag if (Path(ckpt_dir) / tag).is_dir() else None


def _candidates(ckpt_dir: Path) -> list[str]:
    """LATEST's tag first, then the other tags, newest first."""
    first = latest_tag(ckpt_dir)
    rest = sorted((p.name for p in ckpt_dir.glob("step*") if p.is_dir() and p.name != first), reverse=True)
    return ([first] if first else []) + rest


def _fresh_tag(ckpt_dir: Path, step: int) -> str:
    """`stepN`, or `stepN.k` when that name is taken: never overwrite what LATEST may point at."""
    tag, k = f"step{step:08d}", 0
    while (ckpt_dir / tag).exists():
        k += 1
        tag = f"step{step:08d}.{k}"
    return tag


def _broadcast(obj: Any) -> Any:
    """Rank 0's value on every rank: one decision even without a shared view of the files."""
    box = [obj]
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def expected_bytes(engine, ckpt_dir: Path) -> int:
    """The next checkpoint's size: the newest complete one's, else an estimate from the model."""
    tag = latest_tag(ckpt_dir)
    if tag is not None and (ckpt_dir / tag / MANIFEST).is_file():
        return diskspace.tag_bytes(ckpt_dir / tag)
    module = getattr(engine, "module", None)
    if module is None:  # an engine that is not DeepSpeed's (a test's): nothing to size it by
        return 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return diskspace.checkpoint_bytes(module, world)


def _all_ok(error: BaseException | None) -> int:
    """0 when no rank failed, 1 when some rank ran out of space, 2 for any other failure (every rank alike)."""
    code = 0 if error is None else (1 if diskspace.is_disk_full(error) else 2)
    t = torch.tensor([float(code)])
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        t = t.to("cuda" if torch.cuda.is_available() else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def _give_up(code: int, error: BaseException | None, ckpt_dir: Path, tag: str, need: int, rank: int) -> None:
    """Every rank leaves together: the half-written tag goes (it held no committed progress)."""
    if rank == 0:
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    if code == 1:
        kept = latest_tag(ckpt_dir)
        raise diskspace.DiskFull(diskspace.message(
            f"checkpoint {tag}", ckpt_dir, need,
            after=f" (LATEST still names {kept})" if kept else " (no earlier checkpoint: the stage restarts)"))
    if error is not None:
        raise error
    raise RuntimeError(f"saving checkpoint {ckpt_dir / tag} failed on another rank (see its log)")


def save(engine, ckpt_dir: str | Path, step: int, progress: dict[str, Any], rank: int) -> str:
    """Save engine + progress (identical on all ranks) + this rank's RNG; manifest; then the pointer.

    A rank whose DeepSpeed save fails has skipped the barrier that ends it on the others, so it
    meets them there before they all compare outcomes (one all-reduce) and stop together.
    """
    ckpt_dir = Path(ckpt_dir)
    tag = _broadcast(_fresh_tag(ckpt_dir, step) if rank == 0 else None)
    need = expected_bytes(engine, ckpt_dir)
    NOW.start_writing(f"checkpoint {tag}", need, ckpt_dir)
    error: BaseException | None = None
    try:
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"progress": progress}, save_latest=False)
    except Exception as err:  # noqa: BLE001  agreed on below, then re-raised on every rank
        if hang.is_collective_timeout(err):
            raise  # another rank stopped answering: there is no one to agree with
        error = err
        barrier()  # the one engine.save_checkpoint ends with on the ranks that did not fail
    if error is None:
        try:
            save_rng(ckpt_dir / tag / f"rng_rank{rank}.npz")
        except Exception as err:  # noqa: BLE001
            error = err
    code = _all_ok(error)
    if code:
        _give_up(code, error, ckpt_dir, tag, need, rank)
    if rank == 0:
        try:
            atomic_write_text(ckpt_dir / tag / "progress.json", json.dumps(progress))
            write_manifest(ckpt_dir / tag)
            atomic_write_text(ckpt_dir / POINTER, tag)
        except Exception as err:  # noqa: BLE001
            error = err
    code = _all_ok(error)  # also the barrier after rank 0's writes
    if code:
        _give_up(code, error, ckpt_dir, tag, need, rank)
    if rank == 0:
        tags = sorted(p.name for p in ckpt_dir.glob("step*") if p.is_dir() and p.name != tag)
        complete = [t for t in tags if (ckpt_dir / t / MANIFEST).is_file()]
        # keep the newest complete ones; a tag without a manifest is a save that never finished
        for old in complete[:max(0, len(complete) - (KEEP - 1))] + [t for t in tags if t not in complete]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    barrier()
    NOW.done_writing()
    return tag


def check_room(engine, ckpt_dir: Path) -> tuple[str | None, str | None]:
    """(refusal, warning) for a stage about to train: refused when one checkpoint does not fit,
    warned when the KEEP checkpoints it holds plus the one being written will not."""
    need = expected_bytes(engine, ckpt_dir)
    free = diskspace.free_bytes(ckpt_dir)
    held = len([p for p in ckpt_dir.glob("step*") if p.is_dir()]) if ckpt_dir.is_dir() else 0
    if free < need:
        return diskspace.message("the first checkpoint of this stage", ckpt_dir, need, free), None
    more = max(1, KEEP + 1 - held) * need
    if free < more:
        return None, (f"warning: {ckpt_dir} has {diskspace.human(free)} free; the {KEEP} checkpoints a stage keeps "
                      f"plus the one being written need about {diskspace.human(more)} more: a later save may fail")
    return None, None


def choose_tag(ckpt_dir: Path) -> tuple[str | None, str | None]:
    """(newest intact tag, None) or (None, why none is usable); damaged tags are set aside.

    A tag with no manifest that LATEST does not name is a save killed before it finished (the
    manifest is written before the pointer): it never held committed progress, so it is removed,
    as the pruning in `save` would, and does not count as damage. A kill during the stage's first
    save thus restarts the stage instead of stopping every later requeue.
    """
    problems = []
    pointed = latest_tag(ckpt_dir)
    for tag in _candidates(ckpt_dir):
        if tag != pointed and not (ckpt_dir / tag / MANIFEST).exists():
            shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
            print(f"warning: checkpoint {tag} is a save that never finished (no {MANIFEST}); removed it",
                  file=sys.stderr, flush=True)
            continue
        problem = verify(ckpt_dir / tag)
        if problem is None:
            return tag, None
        aside = ckpt_dir / f"{DAMAGED_PREFIX}{tag}"
        os.replace(ckpt_dir / tag, aside)  # out of the step* namespace: neither resumed nor counted by KEEP
        print(f"warning: checkpoint {tag} is damaged ({problem}); moved to {aside.name}, trying an older one",
              file=sys.stderr, flush=True)
        problems.append(f"{tag}: {problem}")
    return None, "; ".join(problems) or None


def load(engine, ckpt_dir: str | Path, rank: int) -> dict[str, Any] | None:
    """Restore the newest intact checkpoint; returns its progress dict, or None if there is none.
    Called as a stage starts, so it is also where the stage is refused if no checkpoint would fit."""
    ckpt_dir = Path(ckpt_dir)
    room = check_room(engine, ckpt_dir) if rank == 0 else (None, None)
    tag, problem, (refusal, warning) = _broadcast(
        (*(choose_tag(ckpt_dir) if rank == 0 and ckpt_dir.is_dir() else (None, None)), room))
    if warning and rank == 0:
        print(warning, file=sys.stderr, flush=True)
    if refusal:
        raise diskspace.DiskFull(refusal)
    if tag is None:
        if problem:
            raise UserError(f"no intact checkpoint left in {ckpt_dir} ({problem}); move it away to restart the stage")
        return None
    _, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_strict=True)
    if client is None:
        raise RuntimeError(f"checkpoint {ckpt_dir / tag} could not be loaded")
    rng_file = ckpt_dir / tag / f"rng_rank{rank}.npz"
    if rng_file.is_file():
        load_rng(rng_file)
    return client["progress"]
