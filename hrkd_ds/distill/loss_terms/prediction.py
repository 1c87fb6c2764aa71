"""L_pred,d: TinyBERT's soft cross-entropy of the student's logits against the teacher's at
temperature tau (`distill.temperature`), mean over batch and classes (docs/METHOD.md, "Loss
terms"); (1/K) sum_d in the total, not graph-weighted."""

from __future__ import annotations

import torch

from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register
from hrkd_ds.distill.terms import soft_cross_entropy, soft_cross_entropy_per_domain


def fused(ep: Episode) -> torch.Tensor:
    return soft_cross_entropy_per_domain(ep.student.logits, ep.teacher_logits, ep.num_domains, ep.temperature)


def reference(rows: DomainRows) -> torch.Tensor:
    return soft_cross_entropy(rows.student_logits, rows.teacher_logits, rows.temperature)


TERM = register(LossTerm("pred", "domain", fused, reference, frozenset({"teacher_logits"}), order=3, task_head=True,
                         doc="L_pred"))
