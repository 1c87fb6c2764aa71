"""The contract between the training loop and the module a DeepSpeed engine wraps.

`module(batch, teacher=...)` returns a `StepOutput` (`teacher`: the stage's frozen teacher engine,
or None; distill/step.py is the distilling modules' step); `module(batch, predict=True)` returns
logits. Logged tensors describe their own layout through the module's `log_layout`, so the generic
loop formats any method's logs without knowing what they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "domain_ids")

BY_DOMAIN = "by_domain"  # (K,) or (L, K): per-domain values, filed under the row's "terms"
RAW = "raw"  # any shape: nested lists at the row's top level (e.g. graph weights, ratios)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


@dataclass
class StepOutput(ModelOutput):
    """Scalar to backpropagate plus detached tensors for logging (a dict for ZeRO-3's hooks)."""

    loss: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] | None = None


def log_layout(module: torch.nn.Module, key: str) -> str:
    """How the loop should file log `key` of `module` (BY_DOMAIN unless the module says otherwise)."""
    return getattr(module, "log_layout", {}).get(key, BY_DOMAIN)
