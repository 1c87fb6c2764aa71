"""Typed configuration: schema (dataclasses), loader (YAML + overrides), checks, resume rules,
and DeepSpeed's own JSON configs."""

from hrkd_ds.config.loader import load_config, resolve_package_path, save_config, to_dict
from hrkd_ds.config.resume import RESUME_FREE, check_resume_config
from hrkd_ds.config.schema import (
    Config,
    DataConfig,
    DistillConfig,
    GraphConfig,
    ModelConfig,
    StageConfig,
    StudentConfig,
    TermConfig,
    TokenizerConfig,
    TrackingConfig,
    TrainConfig,
)
from hrkd_ds.config.validate import validate

__all__ = [
    "RESUME_FREE", "Config", "DataConfig", "DistillConfig", "GraphConfig", "ModelConfig", "StageConfig", "StudentConfig",
    "TermConfig", "TokenizerConfig", "TrackingConfig", "TrainConfig", "check_resume_config", "load_config", "resolve_package_path",
    "save_config", "to_dict", "validate",
]
