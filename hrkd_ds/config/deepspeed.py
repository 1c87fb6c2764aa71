"""DeepSpeed JSON configs: read them in DeepSpeed's own format, reconcile batch sizes with the YAML.

The YAML owns the episode size (examples per domain per rank); a JSON that states a different
micro-batch or global batch is a user error, not something to silently override.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hrkd_ds.errors import UserError


def read_ds_config(path: str) -> dict[str, Any]:
    """Parse a DeepSpeed JSON file, with a one-line error naming the file when it is bad."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"DeepSpeed config not found: {path}")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"DeepSpeed config {path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"DeepSpeed config {path}: top level must be an object")
    stage = zero_stage(cfg)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"DeepSpeed config {path}: zero_optimization.stage {stage!r} is not 0..3")
    return cfg


def zero_stage(ds_cfg: dict[str, Any]) -> int:
    """The ZeRO stage a DeepSpeed config asks for (0 when it has no zero_optimization section)."""
    return ds_cfg.get("zero_optimization", {}).get("stage", 0)


def ds_resume_fields(ds_cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings a DeepSpeed checkpoint cannot be resumed across, as flat config-like keys."""
    return {"ds.zero_stage": zero_stage(ds_cfg),
            "ds.bf16": uses_bf16(ds_cfg),
            "ds.fp16": bool(ds_cfg.get("fp16", {}).get("enabled", False)),
            "ds.gradient_accumulation_steps": ds_cfg.get("gradient_accumulation_steps", 1)}


def _given(value: Any) -> bool:
    return value is not None and value != "auto"


def with_batch_sizes(ds_cfg: dict[str, Any], micro_batch: int, world_size: int, source: str) -> dict[str, Any]:
    """Fill the batch keys from the episode size; reject a JSON that contradicts it."""
    cfg = copy.deepcopy(ds_cfg)
    gas = cfg.get("gradient_accumulation_steps", 1)
    if not _given(gas):
        gas = 1
    if not isinstance(gas, int) or gas < 1:
        raise UserError(f"DeepSpeed config {source}: gradient_accumulation_steps {gas!r} must be a positive integer")
    micro = cfg.get("train_micro_batch_size_per_gpu")
    if _given(micro) and micro != micro_batch:
        raise UserError(
            f"DeepSpeed config {source}: train_micro_batch_size_per_gpu={micro} contradicts the YAML "
            f"(batch_per_domain x domains = {micro_batch}); remove it or set it to \"auto\""
        )
    total = cfg.get("train_batch_size")
    expected = micro_batch * gas * world_size
    if _given(total) and total != expected:
        raise UserError(
            f"DeepSpeed config {source}: train_batch_size={total} contradicts the YAML "
            f"(micro {micro_batch} x accumulation {gas} x world {world_size} = {expected})"
        )
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = gas
    cfg["train_batch_size"] = expected
    if "gradient_clipping" not in cfg:
        raise UserError(f"DeepSpeed config {source}: set gradient_clipping explicitly (DeepSpeed 0.19 defaults it to 1.0)")
    return cfg


def uses_bf16(ds_cfg: dict[str, Any]) -> bool:
    return bool(ds_cfg.get("bf16", {}).get("enabled", False))


def compute_precision(ds_cfg: dict[str, Any]) -> str:
    """"bf16", "fp16" or "fp32": the dtype an engine built from this JSON computes in."""
    for name in ("bf16", "fp16"):
        if (ds_cfg.get(name) or {}).get("enabled"):
            return name
    return "fp32"
