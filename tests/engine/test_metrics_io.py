"""metrics.jsonl rewinds to the checkpoint on resume; atomic writes never leave half files."""

import json
import os

import pytest

from hrkd_ds.io import atomic_write_text, replace_dir
from hrkd_ds.tracking.metrics import MetricsLog
from hrkd_ds.tracking.plots import plot_domain_weights
from hrkd_ds.tracking.wandb_run import resolve_mode


def test_rewind_drops_only_later_steps_of_that_stage(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", enabled=True)
    for step in range(1, 6):
        log.write({"stage": "teacher", "step": step, "loss": float(step)})
    for step in range(1, 4):
        log.write({"stage": "student", "step": step, "loss": float(step)})
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"stage": "student", "st')  # torn by a crash
    log.rewind("student", 2)
    rows = log.rows()
    assert [r["step"] for r in rows if r["stage"] == "teacher"] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows if r["stage"] == "student"] == [1, 2]
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_disabled_log_writes_nothing(tmp_path):
    MetricsLog(tmp_path / "m.jsonl", enabled=False).write({"stage": "x", "step": 1})
    assert not (tmp_path / "m.jsonl").exists()


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_text(target, "good")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "half")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_replace_dir_swaps_whole_directories(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("2")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a").write_text("1")
    replace_dir(tmp_path / "new", tmp_path / "model")
    assert (tmp_path / "model" / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_wandb_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert resolve_mode("") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("") == "disabled"
    assert resolve_mode("offline") == "offline"


def test_domain_weight_plot(tmp_path):
    rows = [{"stage": "student", "step": s, "weights": [[0.5, 0.5], [0.4 + 0.01 * s, 0.6 - 0.01 * s]]} for s in range(1, 6)]
    assert plot_domain_weights(rows, ["a", "b"], tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 1000
    assert not plot_domain_weights([{"step": 1}], ["a", "b"], tmp_path / "none.png")


def test_recover_dir_undoes_a_swap_interrupted_between_renames(tmp_path):
    from hrkd_ds.io import recover_dir

    (tmp_path / ".model.old").mkdir()
    (tmp_path / ".model.old" / "a").write_text("1")
    recover_dir(tmp_path / "model")  # crash left only the previous copy
    assert (tmp_path / "model" / "a").read_text() == "1" and not (tmp_path / ".model.old").exists()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("2")
    replace_dir(tmp_path / "new", tmp_path / "model")
    assert (tmp_path / "model" / "a").read_text() == "2"
