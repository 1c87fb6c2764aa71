"""Pruning keeps the newest complete checkpoints: a newer tag left by an interrupted save (no
manifest) is removed, never counted as one of the kept ones."""

from __future__ import annotations

from pathlib import Path

from hrkd_ds.engine import checkpoint


class FileEngine:
    """save_checkpoint writes one file per tag, as DeepSpeed writes its own."""

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        (Path(save_dir) / tag).mkdir(parents=True, exist_ok=True)
        (Path(save_dir) / tag / "state.bin").write_bytes(b"x" * 16)


def test_stale_newer_tag_is_not_kept_over_an_intact_older_one(tmp_path):
    engine = FileEngine()
    for step in (1, 2):
        checkpoint.save(engine, tmp_path, step, {"step": step}, rank=0)
    (tmp_path / "step00000005").mkdir()  # a save of step 5 killed before its manifest; the run resumed at 2
    (tmp_path / "step00000005" / "state.bin").write_bytes(b"partial")
    checkpoint.save(engine, tmp_path, 3, {"step": 3}, rank=0)
    assert sorted(p.name for p in tmp_path.glob("step*")) == ["step00000002", "step00000003"]
    assert checkpoint.latest_tag(tmp_path) == "step00000003"
    assert checkpoint.verify(tmp_path / "step00000002") is None  # the fallback is intact
