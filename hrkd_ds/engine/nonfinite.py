"""Non-finite losses and weights: detected on every rank together, never trained on, never saved.

Each micro-step's loss is checked before backward (one all-reduce of a flag, so every rank takes
the same branch and none waits in a collective). Policy `skip` drops that step, backward and
optimizer step both, on every rank; `stop` (or more than `train.max_nonfinite_steps` skipped in
a row) ends the run with EXIT_DIVERGED. Before any checkpoint or export the weights themselves are
checked (each rank its own shard), so a step that turned them non-finite is never written.
The stop's one line ends with the settings of this run that can cause it (`likely_causes`): the
stage's learning rate, the distillation temperature where the stage uses it, the precision.

The guard sees every step's loss and the weights before every write first, so it also keeps
engine/where.py's record of the step and of the export under way, for faults reported later.

Fault injection for tests: HRKD_FAULT_NONFINITE_STEPS="3,4" makes the loss of those steps NaN.
"""

from __future__ import annotations

import os

import torch

from hrkd_ds.config import Config, TrainConfig
from hrkd_ds.config.schema import SCHEDULE_OF_ROLE
from hrkd_ds.engine.diskspace import model_bytes
from hrkd_ds.engine.distributed import any_rank
from hrkd_ds.engine.where import NOW
from hrkd_ds.errors import EXIT_DIVERGED, RunStopped

FAULT_ENV = "HRKD_FAULT_NONFINITE_STEPS"


class Diverged(RunStopped):
    """The run stops without writing anything: the last checkpoint stays the newest good state.
    Every rank decides it together, so the main rank alone prints the line."""

    code_for = EXIT_DIVERGED

    def __init__(self, message: str, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


def precision(ds_cfg: dict) -> str:
    """The training precision a DeepSpeed JSON asks for."""
    for name in ("bf16", "fp16"):
        if isinstance(ds_cfg.get(name), dict) and ds_cfg[name].get("enabled") in (True, "auto"):
            return name
    return "fp32"


def likely_causes(cfg: Config, ds_cfg: dict, role: str | None) -> str:
    """The settings of this run, with their values, that can make a stage's loss non-finite."""
    from hrkd_ds.distill.methods import method  # lazy: the guard itself does not need the methods

    field = SCHEDULE_OF_ROLE.get(role or "")
    parts = [f"{field}.lr={getattr(cfg, field).lr:g}"] if field else []
    if role == "student" and method(cfg.distill.method).uses_teacher:
        parts.append(f"distill.temperature={cfg.distill.temperature:g}")
    kind = precision(ds_cfg)
    parts.append(f"precision {kind}" + (" (the DeepSpeed JSON's loss scale and range)" if kind != "fp32" else ""))
    return "settings that can cause it: " + ", ".join(parts)


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
        NOW.step = step
        NOW.done_writing()
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
            raise Diverged(f"{where}; stopping (train.nonfinite=stop)", self.role)
        if self.accumulation > 1:
            raise Diverged(f"{where}; a step cannot be skipped inside gradient accumulation "
                           "(gradient_accumulation_steps > 1)", self.role)
        if self.in_a_row > self.cfg.max_nonfinite_steps:
            raise Diverged(f"{where} for {self.in_a_row} steps in a row (train.max_nonfinite_steps="
                           f"{self.cfg.max_nonfinite_steps})", self.role)
        return False

    def check_weights(self, module: torch.nn.Module, step: int, what: str) -> None:
        """Raise Diverged instead of writing a checkpoint or export of non-finite weights."""
        if what == "export":
            NOW.start_writing(f"the {self.role} export", model_bytes(module))
        bad = any(not bool(torch.isfinite(t).all()) for t in _local_tensors(module))
        if any_rank(bad, self.device):
            raise Diverged(f"{self.role} step {step}: the weights are not finite; no {what} written", self.role)
