"""L_emb,d = MSE(E_T, W_0 E_S): the projected student embeddings against the teacher's
(docs/METHOD.md, "Loss terms"); level 0 of the graph-weighted sum."""

from __future__ import annotations

import torch

from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register
from hrkd_ds.distill.terms import hidden_mse


def fused(ep: Episode) -> torch.Tensor:
    """(1, K): one fused masked sum over the episode, divided per domain."""
    m = ep.hidden_masks
    sums = masked_squared_error_sums(ep.projected[:1], ep.teacher_hidden[:1], m.tokens, ep.num_domains, compiled=ep.compiled)
    return sums / (m.tokens_per_domain * ep.projected[0].shape[-1])


def reference(rows: DomainRows) -> torch.Tensor:
    return hidden_mse(rows.projected[0], rows.teacher_hidden[0], rows.hidden_attention, rows.normalization)


TERM = register(LossTerm("emb", "embedding", fused, reference, frozenset({"hidden"}), order=0, doc="L_emb"))
