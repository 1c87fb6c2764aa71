"""L_att,i,d = MSE(A_T^(m(i)), A_S^i): attention maps (post-softmax probabilities by default,
`distill.attention`), head-averaged when the head counts differ (docs/METHOD.md, "Attention term");
levels 1..L of the graph-weighted sum. Weight 0 also spares both encoders their attention maps."""

from __future__ import annotations

import torch

from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.term_registry import DomainRows, Episode, LossTerm, register
from hrkd_ds.distill.terms import attention_mse, head_average


def fused(ep: Episode) -> torch.Tensor:
    """(L, K) MSEs of the (N, h, T, T) maps over the entries `masks.pairs` counts."""
    s_att, t_att = list(ep.student.attentions), ep.teacher_attentions
    pairs = ep.masks.pairs  # (N, 1, T, T)
    heads = s_att[0].shape[1]
    if heads != t_att[0].shape[1]:
        s_att = [head_average(a, pairs) for a in s_att]
        t_att = [head_average(a, pairs) for a in t_att]
        heads = 1
    sums = masked_squared_error_sums(s_att, t_att, pairs, ep.num_domains, compiled=ep.compiled)
    return sums / (ep.masks.pairs_per_domain * heads)


def reference(rows: DomainRows) -> torch.Tensor:
    return torch.stack([attention_mse(s, t, rows.attention_mask, rows.normalization)
                        for s, t in zip(rows.student_attentions, rows.teacher_attentions)])


TERM = register(LossTerm("att", "layers", fused, reference, frozenset({"attentions"}), order=1, doc="L_att"))
