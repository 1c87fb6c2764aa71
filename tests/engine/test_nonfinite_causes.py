"""The non-finite stop names the settings of this run that can cause it, with their values: the
stage's learning rate, the temperature only where the stage distils, the precision in use."""

from __future__ import annotations

from hrkd_ds.config import Config
from hrkd_ds.engine.nonfinite import likely_causes, precision


def test_teacher_stage_names_its_lr_and_fp32_not_the_temperature():
    cfg = Config()
    cfg.teacher_train.lr = 0.125
    text = likely_causes(cfg, {"zero_optimization": {"stage": 2}}, "teacher")
    assert "teacher_train.lr=0.125" in text and "precision fp32" in text
    assert "temperature" not in text and "learning rate" not in text.replace("lr=", "")


def test_student_stage_names_lr_temperature_and_half_precision():
    cfg = Config()
    cfg.distill_train.lr, cfg.distill.temperature = 3e-4, 0.05
    text = likely_causes(cfg, {"bf16": {"enabled": True}}, "student")
    assert "distill_train.lr=0.0003" in text and "distill.temperature=0.05" in text and "precision bf16" in text
    cfg.distill.method = "none"  # no teacher, no temperature
    assert "temperature" not in likely_causes(cfg, {"fp16": {"enabled": "auto"}}, "student")
    assert "general_train.lr=" in likely_causes(cfg, {}, "general")


def test_precision_reads_the_deepspeed_json():
    assert precision({}) == "fp32" and precision({"fp16": {"enabled": False}}) == "fp32"
    assert precision({"fp16": {"enabled": True}}) == "fp16" and precision({"bf16": {"enabled": "auto"}}) == "bf16"
