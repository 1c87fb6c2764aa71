"""Non-finite losses and weights: detected on every rank together, never trained on, never saved.

Each micro-step's loss is checked before backward (one all-reduce of a flag, so every rank takes
the same branch and none waits in a collective). Policy `skip` drops that step, backward and
optimizer step both, on every rank; `stop` (or more than `train.max_nonfinite_steps` skipped in
a row) ends the run with EXIT_DIVERGED. Before any checkpoint or export the weights themselves are
checked (each rank its own shard), so a step that turned them non-finite is never written.

Fault injection for tests: HRKD_FAULT_NONFINITE_STEPS="3,4" makes the loss of those steps NaN.
"""

from __future__ import annotations

import os

import torch

from hrkd_ds.config import TrainConfig
from hrkd_ds.engine.distributed import any_rank

EXIT_DIVERGED = 4
FAULT_ENV = "HRKD_FAULT_NONFINITE_STEPS"


class Diverged(SystemExit):
    """The run stops without writing anything: the last checkpoint stays the newest good state."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_DIVERGED)
        self.message = message


def _local_tensors(module: torch.nn.Module):
    """This rank's parameter data: the ZeRO-3 partition where parameters are partitioned."""
    for p in module.parameters():
        yield p.ds_tensor if hasattr(p, "ds_tensor") else p.data


class NonFiniteGuard:
    def __init__(self, cfg: TrainConfig, role: str, device: torch.device, accumulation: int) -> None:
        self.cfg, self.role, self.device, self.accumulation = cfg, role, device, accumulation
        self.in_a_row = 0
        self.skipped = 0
        self.fault_steps = {int(s) for s in os.environ.get(FAULT_ENV, "").split(",") if s.strip()}

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """The step's loss, NaN at an injected fault step."""
        return loss * float("nan") if step in self.fault_steps else loss

    def step_ok(self, loss: torch.Tensor, step: int) -> bool:
        """True to train on this step; False to skip it (every rank alike). Raises Diverged to stop."""
        if not any_rank(not bool(torch.isfinite(loss.detach()).all()), self.device):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped += 1
        where = f"{self.role} step {step}: the loss is not finite"
        if self.cfg.nonfinite == "stop":
            raise Diverged(f"{where}; stopping (train.nonfinite=stop)")
        if self.accumulation > 1:
            raise Diverged(f"{where}; a step cannot be skipped inside gradient accumulation (gradient_accumulation_steps > 1)")
        if self.in_a_row > self.cfg.max_nonfinite_steps:
            raise Diverged(f"{where} for {self.in_a_row} steps in a row (train.max_nonfinite_steps="
                           f"{self.cfg.max_nonfinite_steps}); lower the learning rate")
        return False

    def check_weights(self, module: torch.nn.Module, step: int, what: str) -> None:
        """Raise Diverged instead of writing a checkpoint or export of non-finite weights."""
        bad = any(not bool(torch.isfinite(t).all()) for t in _local_tensors(module))
        if any_rank(bad, self.device):
            raise Diverged(f"{self.role} step {step}: the weights are not finite; no {what} written")
