"""CE_d: the labels' cross-entropy, mean within each domain; (1/K) sum_d in the total. Not part of
HRKD or TinyBERT's task distillation (default weight 0); an option because the grid found
distillation alone behind plain fine-tuning at a short budget (docs/RESULTS.md). The meta-teacher
and the `none` baseline train on the same per-domain mean (distill/methods.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index; data/augment.py IGNORE


def per_domain_ce(logits: torch.Tensor, labels: torch.Tensor, num_domains: int) -> torch.Tensor:
    """Cross-entropy averaged within each domain; (K,). Rows are domain-major, B per domain.

    Rows labelled IGNORE (-100: the transfer set's augmented copies, data/augment.py) are left out:
    the mean is over each domain's labelled rows (0 where a domain has none). Without such rows
    this is the plain per-domain mean, computed as before."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")  # (K*B,); 0 at ignored rows
    ignored = labels == IGNORE_INDEX
    if not bool(ignored.any()):
        return losses.view(num_domains, -1).mean(dim=1)
    counts = (~ignored).view(num_domains, -1).sum(dim=1).clamp_min(1)
    return losses.view(num_domains, -1).sum(dim=1) / counts


def fused(ep: Episode) -> torch.Tensor:
    return per_domain_ce(ep.student.logits, ep.labels, ep.num_domains)


def reference(rows: DomainRows) -> torch.Tensor:
    if bool((rows.labels == IGNORE_INDEX).all()):  # a domain of augmented rows only: nothing to fit
        return rows.student_logits.float().sum() * 0.0
    return F.cross_entropy(rows.student_logits.float(), rows.labels)  # mean over the labelled rows


TERM = register(LossTerm("ce", "domain", fused, reference, frozenset({"labels"}), order=4, default_weight=0.0,
                         task_head=True, doc="CE"))
