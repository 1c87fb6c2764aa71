"""L_hid,i,d = MSE(H_T^(m(i)), W_i H_S^i): each student layer's projected states against its mapped
teacher layer's (docs/METHOD.md, "Loss terms"); levels 1..L of the graph-weighted sum."""

from __future__ import annotations

import torch

from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register
from hrkd_ds.distill.terms import hidden_mse


def fused(ep: Episode) -> torch.Tensor:
    """(L, K): one fused masked sum over every layer, divided per domain."""
    m = ep.hidden_masks
    sums = masked_squared_error_sums(ep.projected[1:], ep.teacher_hidden[1:], m.tokens, ep.num_domains, compiled=ep.compiled)
    return sums / (m.tokens_per_domain * ep.projected[0].shape[-1])


def reference(rows: DomainRows) -> torch.Tensor:
    return torch.stack([hidden_mse(s, t, rows.hidden_attention, rows.normalization)
                        for s, t in zip(rows.projected[1:], rows.teacher_hidden[1:])])


TERM = register(LossTerm("hid", "layers", fused, reference, frozenset({"hidden"}), order=2, doc="L_hid"))
