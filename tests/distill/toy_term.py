"""A toy loss term, registered on import: the whole of what a new term takes (term_registry.py).

L_toy,d = mean over domain d's rows and classes of the student's squared task logits (a logit-norm
penalty); per-domain, so it enters the total as w (1/K) sum_d L_toy,d. Default weight 0: importing
it changes no recipe until `distill.terms.toy.weight` is set.
"""

from __future__ import annotations

import torch

from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register


def fused(ep: Episode) -> torch.Tensor:
    return ep.student.logits.pow(2).reshape(ep.num_domains, -1).mean(dim=1)


def reference(rows: DomainRows) -> torch.Tensor:
    return rows.student_logits.pow(2).mean()


TERM = register(LossTerm("toy", "domain", fused, reference, frozenset(), order=100, default_weight=0.0, task_head=True))
