"""A full disk while checkpointing is one line (directory, bytes needed and free), exit code 6,
and LATEST with the previous checkpoint intact; a stage where not even one checkpoint fits is
refused before it trains. In-process, with a checkpoint engine that writes files as DeepSpeed's."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from hrkd_ds.engine import checkpoint, diskspace
from hrkd_ds.errors import EXIT_DISK_FULL, EXIT_USAGE

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


class FileEngine:
    """Writes a few hundred bytes per tag; from save number `full_at` on, the disk is full mid-write."""

    def __init__(self, full_at: int = 0) -> None:
        self.module = torch.nn.Linear(64, 64)
        self.saves, self.full_at = 0, full_at

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        self.saves += 1
        (Path(save_dir) / tag).mkdir(parents=True, exist_ok=True)
        (Path(save_dir) / tag / "model_states.pt").write_bytes(b"x" * 100)
        if self.full_at and self.saves >= self.full_at:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4160 vs 4054") from ENOSPC
        (Path(save_dir) / tag / "optim_states.pt").write_bytes(b"y" * 300)


@pytest.mark.parametrize("exc,full", [
    (ENOSPC, True), (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4160 vs 4054"), True),
    (RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"), True),
    (Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'), True),
    (OSError(errno.ENOENT, "No such file or directory"), False), (RuntimeError("boom"), False),
])
def test_every_shape_of_a_full_disk_is_recognised(exc, full):
    assert diskspace.is_disk_full(exc) is full
    try:
        raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert diskspace.is_disk_full(outer) is full


def test_a_save_that_finds_the_disk_full_keeps_latest_and_the_previous_checkpoint(tmp_path):
    engine = FileEngine(full_at=3)
    for step in (2, 4):
        checkpoint.save(engine, tmp_path, step, {"step": step}, rank=0)
    with pytest.raises(diskspace.DiskFull) as info:
        checkpoint.save(engine, tmp_path, 6, {"step": 6}, rank=0)
    stop = info.value
    assert stop.code == EXIT_DISK_FULL and stop.code != EXIT_USAGE and "\n" not in stop.message
    need = diskspace.tag_bytes(tmp_path / "step00000004")
    assert str(tmp_path) in stop.message and f"({need} bytes)" in stop.message and "bytes) free" in stop.message
    assert "LATEST still names step00000004" in stop.message, stop.message
    assert (tmp_path / "LATEST").read_text() == "step00000004"
    assert sorted(p.name for p in tmp_path.glob("step*")) == ["step00000002", "step00000004"]  # the half-written tag went
    assert checkpoint.verify(tmp_path / "step00000002") is None and checkpoint.verify(tmp_path / "step00000004") is None
    assert checkpoint.choose_tag(tmp_path) == ("step00000004", None)


def test_other_save_errors_are_not_called_a_full_disk(tmp_path):
    class Broken(FileEngine):
        def save_checkpoint(self, save_dir, tag, client_state, save_latest):
            raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        checkpoint.save(Broken(), tmp_path, 1, {"step": 1}, rank=0)
    assert not list(tmp_path.glob("step*")) and not (tmp_path / "LATEST").exists()


def test_first_checkpoint_is_sized_from_the_model():
    module = torch.nn.Linear(1000, 1000)  # 1,001,000 fp32 parameters
    n = 1_001_000
    est = diskspace.checkpoint_bytes(module, world_size=2)
    assert 16 * n <= est <= 16 * n + 1_000_000  # weights 4 + Adam state 12 bytes each, plus framing
    module.weight.requires_grad_(False)  # frozen weights carry no optimizer state
    assert diskspace.checkpoint_bytes(module, world_size=2) < est - 11 * 1_000_000


@pytest.mark.parametrize("times,refused,warned", [(0.5, True, False), (2, False, True), (100, False, False)])
def test_room_is_checked_before_the_stage_trains(tmp_path, monkeypatch, times, refused, warned):
    """Free space as a multiple of one checkpoint: under one refuses, under KEEP + 1 warns."""
    engine = FileEngine()
    need = checkpoint.expected_bytes(engine, tmp_path)
    free = int(times * need)
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: free)
    refusal, warning = checkpoint.check_room(engine, tmp_path)
    assert (refusal is not None) is refused and (warning is not None) is warned
    if refused:
        with pytest.raises(diskspace.DiskFull) as info:
            checkpoint.load(engine, tmp_path, rank=0)
        msg = info.value.message
        assert str(tmp_path) in msg and f"({need} bytes)" in msg and f"({free} bytes) free" in msg, msg
    else:
        assert checkpoint.load(engine, tmp_path, rank=0) is None
