"""DeepSpeed JSON: its own format, batch keys filled from the YAML, contradictions rejected."""

import json
import os
import subprocess
import sys

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


def test_teacher_engine_leaves_the_process_linear_alone():
    """DeepSpeed's memory-efficient ZeRO-3 linear, once on, replaces F.linear for the whole process
    (the student's layers too) with a matmul plus a bias pass; a frozen teacher gains nothing by it."""
    script = (
        "import torch; from hrkd_ds.engine.distributed import init_distributed; init_distributed()\n"
        "from hrkd_ds.engine.teacher import build_teacher_engine, teacher_ds_config\n"
        "orig = torch.nn.functional.linear; m = torch.nn.Sequential(torch.nn.Linear(4, 4))\n"
        "cfg = teacher_ds_config({'gradient_clipping': 0.0, 'zero_optimization': {'stage': 3, %s}}, 2, 1)\n"
        "e = build_teacher_engine(m, cfg)\n"
        "with torch.no_grad(): assert e(torch.randn(2, 4)).shape == (2, 4)\n"
        "print('UNTOUCHED', torch.nn.functional.linear is orig)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env |= {"DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT)}
    for setting, untouched in (("", True), ("'memory_efficient_linear': True", False)):  # the JSON still decides
        res = subprocess.run([sys.executable, "-c", script % setting], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        assert f"UNTOUCHED {untouched}" in res.stdout, res.stdout[-500:] + res.stderr[-2000:]


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
