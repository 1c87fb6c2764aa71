"""The W&B key never lands in anything a run writes: config.yaml, metrics.jsonl, logs, W&B's own files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE_KEY = "hrkdfake" + "0123456789abcdef" * 2  # 40 characters, the shape of a real key
TINY = ["data.domains=[books,dvd]", "data.train_fraction=0.1", "data.max_seq_len=32", "tokenizer.vocab_size=300",
        "teacher.hidden_size=16", "teacher.num_layers=1", "teacher.num_heads=2", "teacher.intermediate_size=32",
        "student.hidden_size=16", "student.num_layers=1", "student.num_heads=2", "student.intermediate_size=32",
        "teacher_train.max_steps=2", "distill_train.max_steps=2", "teacher_train.save_every=1", "distill_train.save_every=1",
        "tracking.wandb_mode=offline", "tracking.progress_bar=false"]


def test_wandb_key_is_never_written(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "WANDB_MODE")}
    env.update(WANDB_API_KEY=FAKE_KEY, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "hrkd_ds/train.py", f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", *TINY],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()
    leaks = [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaks and FAKE_KEY not in res.stdout + res.stderr, leaks
