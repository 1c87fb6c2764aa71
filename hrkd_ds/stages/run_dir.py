"""The files of one run directory, written by rank 0 and atomically.

    config.yaml, deepspeed_config.json, labels.json   what the run is (checked on relaunch)
    results.json                                       accuracies per stage (teacher, student)
    <role>/DONE                                        a stage that finished (skipped on relaunch)
    wandb_id                                           the W&B run to resume
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hrkd_ds.config import Config, save_config
from hrkd_ds.errors import UserError
from hrkd_ds.io import atomic_write_json, atomic_write_text


def check_output_dir(path: str | Path) -> None:
    """`output_dir` can be a run directory: an existing directory, or a new one whose nearest
    existing parent is a writable directory. Checked before anything is written anywhere."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"config field 'output_dir': {p} is an existing file, not a directory")
    parent = p
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"config field 'output_dir': {parent} (a parent of {p}) is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"config field 'output_dir': {parent} is not writable")


def stage_finished(run_dir: str | Path, role: str) -> bool:
    """A stage of the run at `run_dir` finished: its DONE marker and its results.json entry (a
    damaged or half-written results.json counts as not finished)."""
    run = RunDir(run_dir, is_main=False)
    try:
        return run.is_done(role, run.load_results())
    except ValueError:
        return False


class RunDir:
    """Bookkeeping of `output_dir`; only the main rank writes."""

    def __init__(self, path: str | Path, is_main: bool) -> None:
        self.path = Path(path)
        self.is_main = is_main

    def write_run_files(self, cfg: Config, ds_cfg: dict[str, Any], domains: list[str], labels: list[str]) -> None:
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / "config.yaml")
            atomic_write_json(self.path / "deepspeed_config.json", ds_cfg)
            atomic_write_json(self.path / "labels.json", {"domains": domains, "labels": labels})

    @property
    def saved_config(self) -> Path:
        return self.path / "config.yaml"

    def load_results(self) -> dict[str, Any]:
        f = self.path / "results.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def save_results(self, results: dict[str, Any]) -> None:
        if self.is_main:
            atomic_write_json(self.path / "results.json", results)

    def stage_dir(self, role: str) -> Path:
        return self.path / role

    def is_done(self, role: str, results: dict[str, Any]) -> bool:
        return (self.stage_dir(role) / "DONE").is_file() and role in results

    def mark_done(self, role: str) -> None:
        if self.is_main:
            atomic_write_text(self.stage_dir(role) / "DONE", "ok\n")

    def wandb_id(self) -> str | None:
        f = self.path / "wandb_id"
        return f.read_text().strip() if f.is_file() else None

    def save_wandb_id(self, run_id: str | None) -> None:
        if run_id and self.is_main:
            atomic_write_text(self.path / "wandb_id", run_id)
