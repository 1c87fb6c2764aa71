"""Weights & Biases on rank 0: offline unless a key or WANDB_MODE says otherwise."""

from __future__ import annotations

import os
from typing import Any


def resolve_mode(configured: str) -> str:
    """Config wins, then WANDB_MODE, then online only when a key is available."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    return "offline"


class WandbRun:
    """Thin wrapper so the loop never checks ranks or modes itself."""

    def __init__(self, enabled: bool, project: str, mode: str, run_dir: str, name: str, config: dict[str, Any], resume_id: str | None = None) -> None:
        self.run = None
        if not enabled or mode == "disabled":
            return
        import wandb  # lazy: slow to import, and unused when tracking is disabled (tests)

        os.makedirs(run_dir, exist_ok=True)
        self.run = wandb.init(
            project=project, mode=mode, dir=run_dir, name=name, config=config,
            id=resume_id, resume="allow" if resume_id else None, reinit="finish_previous",
        )
        for role in ("teacher", "student"):  # each stage counts its own steps from 1
            self.run.define_metric(f"{role}/step")
            self.run.define_metric(f"{role}/*", step_metric=f"{role}/step")

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, row: dict[str, Any]) -> None:
        """Rows carry their own `<role>/step`; W&B's global step just counts calls."""
        if self.run is not None:
            self.run.log(row)

    def log_image(self, key: str, png) -> None:
        """A PNG written by the run (plots), shown in W&B too."""
        if self.run is not None:
            import wandb  # lazy, as in __init__

            self.run.log({key: wandb.Image(str(png))})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
