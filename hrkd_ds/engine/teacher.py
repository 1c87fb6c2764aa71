"""The frozen teacher as its own DeepSpeed engine in ZeRO-3 inference mode.

No optimizer, eval mode, forward under no_grad, never wrapped in DDP. Stage 3 partitions the
parameters across ranks and gathers them layer by layer in forward, so a teacher larger than one
device can teach; `offload_param` in the JSON keeps the partitions in CPU memory. Every rank must
run every teacher forward: with stage 3 it is a collective.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import deepspeed
import torch

from hrkd_ds.io import atomic_write_json


def teacher_ds_config(ds_cfg: dict[str, Any], micro_batch: int, world_size: int) -> dict[str, Any]:
    """Strip training-only keys; DeepSpeed still wants consistent batch keys to start an engine.

    `memory_efficient_linear` defaults to off for the teacher (unless the JSON sets it): that
    ZeRO-3 linear only saves memory in a backward, which a frozen teacher never runs, and once on it
    replaces `torch.nn.functional.linear` for the whole process, the student's layers included,
    with a matmul plus a separate bias pass on every 3-D input."""
    cfg = copy.deepcopy(ds_cfg)
    for key in ("optimizer", "scheduler", "gradient_accumulation_steps", "train_batch_size"):
        cfg.pop(key, None)
    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict) and zero.get("stage") == 3:
        zero.setdefault("memory_efficient_linear", False)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = 1
    cfg["train_batch_size"] = micro_batch * world_size
    return cfg


def build_teacher_engine(model: torch.nn.Module, ds_cfg: dict[str, Any]):
    """Freeze `model` and hand it to DeepSpeed without an optimizer (ZeRO-inference)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    engine, _, _, _ = deepspeed.initialize(model=model, config=ds_cfg)
    engine.eval()
    return engine


def partition_fraction(engine_or_module) -> float:
    """Share of the teacher's parameter elements this rank holds (about 1/world under ZeRO-3)."""
    module = getattr(engine_or_module, "module", engine_or_module)
    held = total = 0
    for p in module.parameters():
        if hasattr(p, "ds_tensor"):
            held += p.ds_tensor.numel()
            total += p.ds_numel
        else:
            held += p.numel()
            total += p.numel()
    return held / max(1, total)


def partition_record(engine_or_module) -> dict[str, Any]:
    """What this rank holds of the teacher's parameters: fraction, bytes, and the devices holding them
    (with `offload_param` the partition lives in CPU memory, whatever device computes)."""
    module = getattr(engine_or_module, "module", engine_or_module)
    held = [getattr(p, "ds_tensor", p) for p in module.parameters()]
    return {"fraction": partition_fraction(module),
            "held_bytes": sum(t.numel() * t.element_size() for t in held),
            "full_bytes": sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in module.parameters()),
            "devices": sorted({str(t.device) for t in held})}


def write_partition_record(engine, out_dir: Path, rank: int, world_size: int) -> None:
    """out_dir/teacher_partition.rank<R>.json, so a run shows that no rank held the whole teacher."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"teacher_partition.rank{rank}.json",
                      {"rank": rank, "world_size": world_size, **partition_record(engine)})
