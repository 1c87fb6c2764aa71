"""What the DeepSpeed engine wraps in each stage: the model plus its loss, as one nn.Module.

Putting the loss (projections, domain graph) inside the engine's module means DeepSpeed owns
their parameters too: they are optimised, partitioned and checkpointed with the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "domain_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def per_domain_ce(logits: torch.Tensor, labels: torch.Tensor, num_domains: int) -> torch.Tensor:
    """Cross-entropy averaged within each domain; (K,). Rows are domain-major, B per domain."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")  # (K*B,)
    return losses.view(num_domains, -1).mean(dim=1)


@dataclass
class StepOutput(ModelOutput):
    """Scalar to backpropagate plus detached tensors for logging (a dict for ZeRO-3's hooks)."""

    loss: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] | None = None


class SupervisedModule(nn.Module):
    """Stage 1 (meta-teacher) and the `none` baseline: sum over domains of per-domain CE."""

    def __init__(self, model: nn.Module, num_domains: int) -> None:
        super().__init__()
        self.model = model
        self.num_domains = num_domains

    def forward(self, batch: dict[str, torch.Tensor], teacher_out=None, predict: bool = False):
        out = self.model(**model_inputs(batch))
        if predict:
            return out.logits
        ce = per_domain_ce(out.logits, batch["labels"], self.num_domains)
        return StepOutput(loss=ce.sum(), logs={"ce": ce.detach()})


class DistillModule(nn.Module):
    """Stage 2: student forward, then the relational loss against the teacher's outputs."""

    def __init__(self, student: nn.Module, loss: nn.Module, num_domains: int) -> None:
        super().__init__()
        self.model = student
        self.loss = loss
        self.num_domains = num_domains

    def forward(self, batch: dict[str, torch.Tensor], teacher_out=None, predict: bool = False):
        if predict:
            return self.model(**model_inputs(batch)).logits
        out = self.model(**model_inputs(batch), output_internals=True)
        result = self.loss(out, teacher_out, batch["attention_mask"], self.num_domains)
        logs = {k: v.detach() for k, v in result.terms.items()}
        logs["weights"] = result.weights.detach()
        if getattr(result, "ratios", None) is not None:
            logs["ratios"] = result.ratios.detach()
        return StepOutput(loss=result.total, logs=logs)
