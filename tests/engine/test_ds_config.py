"""DeepSpeed JSON: its own format, batch keys filled from the YAML, contradictions rejected."""

import json

import pytest

from hrkd_ds.config.deepspeed import read_ds_config, with_batch_sizes
from hrkd_ds.engine.teacher import teacher_ds_config
from hrkd_ds.errors import UserError
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO_ROOT / "ds_configs").glob("*.json")))
def test_shipped_configs_state_clipping_and_fill_batch(name):
    cfg = read_ds_config(str(REPO_ROOT / "ds_configs" / name))
    assert "gradient_clipping" in cfg  # DeepSpeed 0.19 silently clips at 1.0 otherwise
    filled = with_batch_sizes(cfg, micro_batch=32, world_size=2, source=name)
    assert filled["train_micro_batch_size_per_gpu"] == 32 and filled["train_batch_size"] == 64


def test_teacher_configs_are_stage3_without_optimizer():
    for name in ("teacher_zero3.json", "teacher_zero3_offload.json", "teacher_zero3_bf16.json"):
        cfg = teacher_ds_config(read_ds_config(str(REPO_ROOT / "ds_configs" / name)), 16, 2)
        assert cfg["zero_optimization"]["stage"] == 3 and "optimizer" not in cfg


def test_contradicting_batch_sizes_are_rejected(tmp_path):
    base = {"gradient_clipping": 1.0, "zero_optimization": {"stage": 2}}
    with pytest.raises(UserError, match="train_micro_batch_size_per_gpu=8"):
        with_batch_sizes({**base, "train_micro_batch_size_per_gpu": 8}, 32, 1, "x.json")
    with pytest.raises(UserError, match="train_batch_size=100"):
        with_batch_sizes({**base, "train_batch_size": 100}, 32, 2, "x.json")
    ok = with_batch_sizes({**base, "train_batch_size": 128, "gradient_accumulation_steps": 2}, 32, 2, "x.json")
    assert ok["train_batch_size"] == 128
    assert with_batch_sizes({**base, "train_micro_batch_size_per_gpu": "auto"}, 32, 1, "x")["train_micro_batch_size_per_gpu"] == 32
    with pytest.raises(UserError, match="gradient_clipping"):
        with_batch_sizes({"zero_optimization": {"stage": 0}}, 32, 1, "x.json")


def test_bad_json_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_ds_config(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(UserError, match="bad.json"):
        read_ds_config(str(bad))
    stage = tmp_path / "stage.json"
    stage.write_text(json.dumps({"zero_optimization": {"stage": 5}}))
    with pytest.raises(UserError, match="stage"):
        read_ds_config(str(stage))
