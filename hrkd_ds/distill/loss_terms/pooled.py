"""L_pool,d = MSE(h_T,0, W_p h_S,0): the student's last-layer state at position 0 ([CLS], what a
BERT-style head pools), projected to the teacher's width, against the teacher's (docs/METHOD.md,
"Loss terms"); (1/K) sum_d in the total, not graph-weighted. One vector per example, so it
crosses tokenizers (each model's own position 0) where the token-level terms cannot. Off by
default; cached teacher targets store the teacher's vector beside its logits
(distill/teacher_targets.py), so it needs no teacher forward per step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register


def fused(ep: Episode) -> torch.Tensor:
    """(K,): mean over each domain's rows and the teacher's width."""
    return (ep.pooled_projected - ep.teacher_pooled).pow(2).mean(dim=-1).view(ep.num_domains, -1).mean(dim=1)


def reference(rows: DomainRows) -> torch.Tensor:
    """One domain's rows, projected here and through torch's own MSE."""
    return F.mse_loss(rows.pool_projection(rows.student_pooled), rows.teacher_pooled)


TERM = register(LossTerm("pool", "domain", fused, reference, frozenset({"pooled"}), order=6, default_weight=0.0,
                         doc="L_pool"))
