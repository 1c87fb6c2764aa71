"""Step rows for metrics.jsonl and W&B: loss, per-domain terms, rates and memory, averaged over ranks.

How each logged tensor is filed comes from the module's `log_layout` (distill/step.py), so this
file knows no method's log keys.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from hrkd_ds.engine.distributed import DistInfo, all_reduce_sum
from hrkd_ds.distill.step import RAW, log_layout


@dataclass
class Window:
    """Samples and tokens since the last logged step, for the throughput figures."""

    t0: float = field(default_factory=time.perf_counter)
    samples: int = 0
    tokens: int = 0

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        self.samples += batch["input_ids"].shape[0]
        self.tokens += int(batch["attention_mask"].sum())

    def reset(self) -> None:
        self.t0, self.samples, self.tokens = time.perf_counter(), 0, 0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _by_domain(t: torch.Tensor, domains: list[str]) -> Any:
    """(K,) -> {domain: v}; (L, K) -> [{domain: v}, ...] for readable metrics."""
    if t.dim() == 1:
        return {d: float(v) for d, v in zip(domains, t.tolist())}
    return [_by_domain(row, domains) for row in t]


def mean_over_ranks(loss: torch.Tensor, logs: dict[str, torch.Tensor], world: int):
    """Average the step's loss and logged tensors over ranks in one collective."""
    names = sorted(logs)
    flat = torch.cat([loss.detach().float().reshape(1)] + [logs[k].float().reshape(-1) for k in names])
    all_reduce_sum(flat)
    flat /= world
    out, at = {}, 1
    for k in names:
        n = logs[k].numel()
        out[k] = flat[at:at + n].view_as(logs[k]).cpu()
        at += n
    return float(flat[0]), out


def flat_for_wandb(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flat_for_wandb(v, key + "/"))
        elif isinstance(v, list):
            flat.update(flat_for_wandb({str(i): x for i, x in enumerate(v)}, key + "/"))
        elif isinstance(v, (int, float)):
            flat[key] = v
    return flat


def step_row(role: str, step: int, epoch: int, out, engine, domains: list[str], window: Window,
             dist: DistInfo) -> dict[str, Any]:
    """One metrics row for a logged step (a collective: every rank calls it)."""
    mean_loss, mean_logs = mean_over_ranks(out.loss, out.logs or {}, dist.world_size)
    elapsed = max(time.perf_counter() - window.t0, 1e-9)
    row: dict[str, Any] = {
        "stage": role, "step": step, "epoch": epoch, "loss": mean_loss,
        "lr": engine.get_lr()[0],
        "samples_per_s": window.samples * dist.world_size / elapsed,
        "tokens_per_s": window.tokens * dist.world_size / elapsed,
        "peak_mem_mb": peak_memory_mb(dist.device),
    }
    terms = {}
    for k, v in mean_logs.items():
        if log_layout(engine.module, k) == RAW:
            row[k] = v.tolist()
        else:
            terms[k] = _by_domain(v, domains)
    row["terms"] = terms
    return row
