"""Relaunching into an existing run directory must not change what that run is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hrkd_ds.config.loader import migrate, to_dict
from hrkd_ds.config.schema import Config
from hrkd_ds.config.deepspeed import ds_resume_fields
from hrkd_ds.errors import UserError

# Fields that may change when a run is relaunched into the same output_dir (schedule length,
# logging, which stages run); anything else would silently mix two experiments in one run.
RESUME_FREE = ("stages", "output_dir", "tracking.", "train.", "data.cache_dir", "distill.teacher_deepspeed",
               "_train.epochs", "_train.max_steps", "_train.eval_every", "_train.save_every", "_train.log_every")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resume_config(cfg: Config, ds_cfg: dict[str, Any], saved: Path) -> None:
    """Refuse a relaunch whose settings differ from the run saved at `saved` (its config.yaml)."""
    if not saved.is_file():
        return
    # fields added since: defaults; renamed fields: their replacements
    old = {**_flatten(to_dict(Config())), **_flatten(migrate(yaml.safe_load(saved.read_text()) or {}))}
    new = _flatten(to_dict(cfg))
    saved_ds = saved.with_name("deepspeed_config.json")
    if saved_ds.is_file():  # what a DeepSpeed checkpoint cannot be loaded across
        old.update(ds_resume_fields(json.loads(saved_ds.read_text())))
        new.update(ds_resume_fields(ds_cfg))
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUME_FREE) or key.endswith(RESUME_FREE) or old.get(key) == new.get(key):
            continue
        raise UserError(
            f"output_dir {cfg.output_dir} holds a run with {key}={old.get(key)!r}, not {new.get(key)!r}: "
            "use a new output_dir, or the same settings to resume"
        )
