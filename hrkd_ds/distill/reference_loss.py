"""Per-domain loop reference of the HRKD loss: the readable definition the fused loss must match.

Same constructor and forward signature as `RelationalDistillLoss`; pass the same
`RelationalParams` to both to compare them weight for weight. Slow on purpose: each domain is its
own slice, projection and masked MSEs (masking with `torch.where`), and each registered term is
computed by its reference form (term_registry.py), independent of its fused form.
"""

from __future__ import annotations

import torch

from hrkd_ds.distill.relational_loss import DistillLossOutput, _RelationalLossBase
from hrkd_ds.distill.term_registry import DomainRows


class ReferenceDistillLoss(_RelationalLossBase):
    """Straightforward loop over domains and layers (tests, benchmark baseline)."""

    def forward(self, student_out, teacher_out, attention_mask: torch.Tensor, num_domains: int | None = None, labels=None) -> DistillLossOutput:
        """Total loss and per-domain terms, one domain at a time."""
        K = self._check(student_out, teacher_out, attention_mask, num_domains)
        p = self.params
        B = attention_mask.shape[0] // K
        t_all, t_att, t_logits = self._teacher_layers(teacher_out, student_out.embeddings.dtype)
        s_hid = [student_out.embeddings, *student_out.hidden_states]
        t_pool, s_pool = self._pooled(student_out, teacher_out, student_out.embeddings.dtype)
        L = len(s_hid) - 1
        # skip_cls: position 0 out of the embedding/hidden MSEs, zeroed here on its own so the loop
        # stays an independent check of the fused loss's without_first_token
        hid_attention = torch.cat([torch.zeros_like(attention_mask[:, :1]), attention_mask[:, 1:]], dim=1) \
            if self.skip_cls else attention_mask
        values: dict[str, list[torch.Tensor]] = {t.name: [] for t, _ in self.terms}
        protos = []
        for d in range(K):
            rows = slice(d * B, (d + 1) * B)
            projected = [proj(h[rows]) for proj, h in zip(p.projections, s_hid)]  # L+1 x (B, T, Ht)
            domain = DomainRows(
                [a[rows] for a in student_out.attentions] if self.attention_loss else [], student_out.logits[rows],
                [t[rows] for t in t_all], [a[rows] for a in t_att], t_logits[rows], projected,
                attention_mask[rows], hid_attention[rows], None if labels is None else labels[rows],
                self.normalization, self.temperature, None if t_pool is None else t_pool[rows],
                None if s_pool is None else s_pool[rows], p.pool_projection)
            for term, _ in self.terms:
                values[term.name].append(term.reference(domain))
            protos.append(torch.stack([self._prototype(x, attention_mask[rows]) for x in projected]))  # (L+1, Ht)
        # per term: (K,) for the embedding level and per-domain terms, (L, K) for the layers
        stacked = {name: torch.stack(v, dim=-1) for name, v in values.items()}
        weights, ratios = self._domain_weights(torch.stack(protos, dim=1), K, L)
        robust = p.objective == "robust"
        r = 2 * weights.detach() - weights if robust else weights  # robust: the graph ascends (graph_objective.py)

        def level_term(g: int, d: int):
            """sum_t w_t L_t,g,d over the layer-wise terms at level g (None when none is there)."""
            parts = [w * (stacked[t.name][d] if t.level == "embedding" else stacked[t.name][g - 1, d])
                     for t, w in self.terms if (t.level == "embedding") == (g == 0) and t.level != "domain"]
            return sum(parts) if parts else None

        total = s_hid[0].new_zeros(())
        for d in range(K):  # the embedding level, the per-domain terms, then the layers: the release's order
            for g in range(L + 1):
                level = level_term(g, d)
                if level is not None:
                    total = total + r[g, d] * level
                if g == 0:
                    for t, w in self.terms:
                        if t.level == "domain":
                            total = total + w * stacked[t.name][d] / K
        if robust:  # + tau * mean term * entropy per level, zero in value
            for g in range(L + 1):
                level = [level_term(g, d) for d in range(K)]
                if level[0] is None:
                    continue
                scale = p.robust_temperature * sum(t.detach() for t in level) / K
                entropy = -sum(r[g, d] * torch.log(r[g, d]) for d in range(K))
                total = total + scale * (entropy - entropy.detach())
        terms = {**stacked, "weights": weights, "ratios": ratios}
        terms = {k: v.detach() for k, v in terms.items()}
        return DistillLossOutput(total=total, terms=terms, weights=terms["weights"], ratios=terms["ratios"])

    def _prototype(self, projected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, Ht) -> (Ht,) mean over the batch and (real, if mask_padding) tokens."""
        if not self.params.mask_padding:
            return projected.mean(dim=(0, 1))
        valid = mask.bool()
        return projected[valid].mean(dim=0)

    def _domain_weights(self, protos: torch.Tensor, K: int, L: int):
        """(L+1, K, Ht) prototypes -> weights (L+1, K), ratios (L, K, L+1), via the loop graph."""
        g = self.params.graph
        if g is None or not self.layer_terms:
            return protos.new_full((L + 1, K), 1.0 / K), protos.new_zeros(L, K, L + 1)
        if self.params.detach_prototypes:
            protos = protos.detach()
        return g.forward_loop(protos)
