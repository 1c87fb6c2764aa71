"""L_kl,d: Hinton's logit distillation, tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau)), summed
over classes and averaged over domain d's rows (docs/METHOD.md, "Loss terms"); (1/K) sum_d in the
total. The logit-KD recipe's soft target (DistilBERT, torchtune's KD recipe): unlike L_pred, which
averages over classes and has no tau^2, its gradient keeps its scale as tau grows. Off by default;
`logit-kd` turns it on (distill/methods.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 logits upcast; float64 (tests) kept


def kl_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, C) -> (N,): tau^2 * sum_c p_T,c (log p_T,c - log p_S,c), both at temperature tau."""
    log_t = F.log_softmax(_at_least_fp32(teacher_logits) / temperature, dim=-1)
    log_s = F.log_softmax(_at_least_fp32(student_logits) / temperature, dim=-1)
    return temperature ** 2 * (log_t.exp() * (log_t - log_s)).sum(dim=-1)


def fused(ep: Episode) -> torch.Tensor:
    return kl_rows(ep.student.logits, ep.teacher_logits, ep.temperature).view(ep.num_domains, -1).mean(dim=1)


def reference(rows: DomainRows) -> torch.Tensor:
    """One domain's rows, through torch's own KL (an implementation independent of kl_rows)."""
    t = rows.temperature
    log_s = torch.log_softmax(_at_least_fp32(rows.student_logits) / t, dim=-1)
    target = torch.softmax(_at_least_fp32(rows.teacher_logits) / t, dim=-1)
    return t * t * F.kl_div(log_s, target, reduction="batchmean")


TERM = register(LossTerm("kl", "domain", fused, reference, frozenset({"teacher_logits"}), order=5, default_weight=0.0,
                         task_head=True, doc="L_kl"))
