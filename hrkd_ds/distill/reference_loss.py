"""Per-domain loop reference of the HRKD loss: the readable definition the fused loss must match.

Same constructor and forward signature as `RelationalDistillLoss`; pass the same
`RelationalParams` to both to compare them weight for weight. Slow on purpose: each domain
and each layer is its own slice, projection and masked MSE (masking with `torch.where`).
"""

from __future__ import annotations

import torch

from hrkd_ds.distill.terms import attention_mse, hidden_mse, soft_cross_entropy
from hrkd_ds.distill.relational_loss import DistillLossOutput, _RelationalLossBase


class ReferenceDistillLoss(_RelationalLossBase):
    """Straightforward loop over domains and layers (tests, benchmark baseline)."""

    def forward(self, student_out, teacher_out, attention_mask: torch.Tensor, num_domains: int | None = None, labels=None) -> DistillLossOutput:
        """Total loss and per-domain terms, one domain at a time."""
        K = self._check(student_out, teacher_out, attention_mask, num_domains)
        p = self.params
        B = attention_mask.shape[0] // K
        t_all, t_att, t_logits = self._teacher_layers(teacher_out, student_out.embeddings.dtype)
        s_hid = [student_out.embeddings, *student_out.hidden_states]
        L = len(s_hid) - 1
        # skip_cls: position 0 out of the embedding/hidden MSEs, zeroed here on its own so the loop
        # stays an independent check of the fused loss's without_first_token
        hid_attention = torch.cat([torch.zeros_like(attention_mask[:, :1]), attention_mask[:, 1:]], dim=1) \
            if self.skip_cls else attention_mask
        emb, att, hid, pred, protos = [], [], [], [], []
        for d in range(K):
            rows = slice(d * B, (d + 1) * B)
            mask = attention_mask[rows]  # (B, T)
            projected = [proj(h[rows]) for proj, h in zip(p.projections, s_hid)]  # L+1 x (B, T, Ht)
            hmask = hid_attention[rows]
            emb.append(hidden_mse(projected[0], t_all[0][rows], hmask, self.normalization))
            hid.append(torch.stack([hidden_mse(projected[i], t_all[i][rows], hmask, self.normalization) for i in range(1, L + 1)]))
            att.append(torch.stack([attention_mse(student_out.attentions[i][rows], t_att[i][rows], mask, self.normalization)
                                    for i in range(L)]) if self.attention_loss else hid[-1].new_zeros(L))
            pred.append(soft_cross_entropy(student_out.logits[rows], t_logits[rows], self.temperature)
                        if self.prediction else student_out.logits.new_zeros(()))
            protos.append(torch.stack([self._prototype(x, mask) for x in projected]))  # (L+1, Ht)
        emb, pred = torch.stack(emb), torch.stack(pred)  # (K,)
        att, hid = torch.stack(att, dim=1), torch.stack(hid, dim=1)  # (L, K)
        weights, ratios = self._domain_weights(torch.stack(protos, dim=1), K, L)
        robust = p.objective == "robust"
        r = 2 * weights.detach() - weights if robust else weights  # robust: the graph ascends (graph_objective.py)
        total = emb.new_zeros(())
        for d in range(K):
            total = total + r[0, d] * emb[d] + pred[d] / K
            for i in range(L):
                total = total + r[i + 1, d] * (att[i, d] + hid[i, d])
        if robust:  # + tau * mean term * entropy per level, zero in value
            for g in range(L + 1):
                level = [emb[d] if g == 0 else att[g - 1, d] + hid[g - 1, d] for d in range(K)]
                scale = p.robust_temperature * sum(t.detach() for t in level) / K
                entropy = -sum(r[g, d] * torch.log(r[g, d]) for d in range(K))
                total = total + scale * (entropy - entropy.detach())
        terms = {"emb": emb, "att": att, "hid": hid, "pred": pred, "weights": weights, "ratios": ratios}
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
        if g is None:
            return protos.new_full((L + 1, K), 1.0 / K), protos.new_zeros(L, K, L + 1)
        if self.params.detach_prototypes:
            protos = protos.detach()
        return g.forward_loop(protos)
