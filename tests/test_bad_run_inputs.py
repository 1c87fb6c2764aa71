"""Two bad inputs the real trainer used to meet only after writing: each is one line naming the
field, exit code 2, and nothing written (no output_dir, no run files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.max_seq_len=32", "tokenizer.vocab_size=400", "data.train_fraction=0.2", "data.dev_fraction=0.02",
        "data.test_fraction=0.02", "teacher_train.max_steps=2", "tracking.wandb_mode=disabled",
        "tracking.progress_bar=false", "stages=[teacher]"]


def trainer(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "hrkd_ds/train.py", *TINY, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("hrkd_ds: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("where", ["itself", "parent"])
def test_output_dir_that_is_a_file(tmp_path, where):
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me\n")
    out = blocker if where == "itself" else blocker / "run"
    line = one_error_line(trainer(f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}"))
    assert "output_dir" in line and str(blocker) in line and "not a directory" in line, line
    assert blocker.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def _pretrained(path: Path, positions: int) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=positions, pad_token_id=None)
    BertForSequenceClassification(cfg).save_pretrained(path)
    return path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("cache", ["default", "data.cache_dir"])
def test_max_seq_len_longer_than_the_pretrained_positions(tmp_path, cache):
    model = _pretrained(tmp_path / "bert16", positions=16)
    before = _tree(tmp_path)
    out = tmp_path / "run"  # the default cache is runs' sibling .hrkd_cache: tmp_path/.hrkd_cache
    extra = [f"data.cache_dir={tmp_path / 'cache'}"] if cache == "data.cache_dir" else []
    line = one_error_line(trainer(f"output_dir={out}", *extra,
                                  f"teacher.pretrained={model}", "teacher.init=pretrained", "data.max_seq_len=32"))
    assert "data.max_seq_len 32" in line and "max_position_embeddings 16" in line and "teacher.pretrained" in line, line
    # nothing at all: no run files (config.yaml, deepspeed_config.json, labels.json used to be written
    # first), no trained tokenizer or tokenized arrays in the cache (written before the check until it moved)
    assert _tree(tmp_path) == before, _tree(tmp_path)
