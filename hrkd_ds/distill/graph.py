"""Domain weights for HRKD: prototypes -> hierarchical compare-aggregate -> domain-relational GAT.

Levels g = 0..L (0 = embedding output, l = student layer l). Each level has K domain prototypes
F_(g,d) (teacher width D). For g >= 1 the compare-aggregate step mixes each domain's prototypes
of levels 0..g (docs/METHOD.md, "Domain weights"); then one GAT per level over the K domains (fully connected
with self loops) gives one scalar per domain, and r_g = softmax over domains.

Two evaluations of the same parameters: `forward` batches levels and domains (used by the fused
loss, no Python loop) and `forward_loop` goes level by level, domain by domain (the readable
reference). They must agree; tests check it.

Departure from the reference (docs/METHOD.md, "Departures" #4): bilinear scores are divided by sqrt(D) so the
softmaxes do not saturate (`graph.scale_scores`; the reference leaves them unscaled).

`graph.init=reference` draws every matrix from the release's Xavier-uniform bounds: gain 1.414,
and for V the fans PyTorch computes over the release's (K, D, D) tensor per level
(fan_in = D*D, fan_out = K*D), far narrower than a per-domain (D, D) matrix's.
`graph.hidden_per_head=0` makes each GAT head as wide as the prototypes, as the release's nhid.

`graph.residual=true` adds each node's own projection to both GAT layers' outputs (a skip
connection). Without it, while the attention logits keep one sign every node gets the same
attention row, hence the same output, and the weights sit at exactly 1/K with zero gradient
(docs/RESULTS.md, "The domain graph"); with it a node's output depends on its own prototype.

`graph.attention=gatv2` (Brody et al., ICLR 2022) puts the LeakyReLU before the attention vector:
e_ij = a . LeakyReLU(W_dst h_i + W_src h_j) is not a sum of a term in i and a term in j, so the
rows differ per querying node and distinct prototypes give distinct outputs. Its second layer
scores in an O-wide space (its output is one scalar per node, and a one-wide GATv2 score
a LeakyReLU(x_i + x_j) is monotone in x_j, i.e. static again); its values are W2 h_j as in `gat`.
Both layers score the node features standardised over the domains (`standardised`): a component
every node shares puts every pair W_dst h_i + W_src h_j in one linear piece of the LeakyReLU, where
the score splits into a term in i plus a term in j and GATv2 is static again (prototypes of real
domains share most of their norm, and the first layer's near-uniform mixing hands the second a
large shared part); and with the LeakyReLU homogeneous, small differences give scores that small,
so the weights' spread would shrink with the square of the prototypes' differences (below float32
resolution at the std-0.02 projections' initial scale). The values stay unstandardised.
`gat` (the release's) keeps its parameters and numbers exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


REFERENCE_GAIN = 1.414  # the release's literal; ours is sqrt(2)


def _xavier(*shape: int, fan_in: int, fan_out: int, gain: float = 1.0) -> nn.Parameter:
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def standardised(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Node features less their mean over the nodes (`dim`), divided by the result's RMS over the
    nodes and features, so GATv2's scores see how the domains differ at any prototype scale.
    Differences below 1e-6 of the features' own RMS (rounding in the mean of identical nodes) give
    zeros: identical nodes stay exactly identical."""
    c = x - x.mean(dim=dim, keepdim=True)
    dims = (dim, -1)
    spread = c.pow(2).mean(dim=dims, keepdim=True).sqrt()
    size = x.pow(2).mean(dim=dims, keepdim=True).sqrt()
    inverse = torch.where(spread > 1e-6 * size, 1.0 / spread.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(spread))
    return c * inverse


def compare_aggregate_fans(K: int, D: int, reference: bool) -> tuple[tuple[int, int, float], tuple[int, int, float]]:
    """(fan_in, fan_out, gain) of U and of V: ours per (D, D) matrix, gain 1; or the release's."""
    if reference:  # xavier_uniform_(gain=1.414) on w_attn_1[l] (D, D) and on w_attn_2[l] (K, D, D)
        return (D, D, REFERENCE_GAIN), (D * D, K * D, REFERENCE_GAIN)
    return (D, D, 1.0), (D, D, 1.0)


class DomainGraph(nn.Module):
    """Compare-aggregate (U_l, V_(l,d)) and one GAT per level; maps prototypes to domain weights."""

    def __init__(self, num_domains: int, num_levels: int, dim: int, cfg, hidden_per_head: int | None = None):
        super().__init__()
        K, G, D, H, O = num_domains, num_levels, dim, cfg.heads, hidden_per_head or cfg.hidden_per_head or dim
        self.num_domains, self.num_levels, self.dim = K, G, D
        self.heads, self.hidden_per_head = H, O
        self.hierarchical = cfg.hierarchical
        self.dropout = cfg.dropout
        self.slope = cfg.leaky_relu_slope
        self.residual = cfg.residual
        self.dynamic = cfg.attention == "gatv2"
        self.score_scale = 1.0 / math.sqrt(D) if cfg.scale_scores else 1.0
        L = G - 1
        # compare-aggregate, levels 1..L
        reference = cfg.init == "reference"
        (u_in, u_out, u_gain), (v_in, v_out, v_gain) = compare_aggregate_fans(K, D, reference)
        self.U = _xavier(L, D, D, fan_in=u_in, fan_out=u_out, gain=u_gain)  # (L, D, D)
        self.V = _xavier(L, K, D, D, fan_in=v_in, fan_out=v_out, gain=v_gain)  # (L, K, D, D)
        # GAT layer 1: H heads of width O; layer 2: one output per node (pyGAT layout, same fans as the release)
        gain = REFERENCE_GAIN if reference else math.sqrt(2.0)
        self.W1 = _xavier(G, H, D, O, fan_in=D, fan_out=O, gain=gain)  # (G, H, D, O)
        if self.dynamic:  # GATv2: target projections, the attention vector after the nonlinearity
            self.W1_dst = _xavier(G, H, D, O, fan_in=D, fan_out=O, gain=gain)  # (G, H, D, O)
            self.a1 = _xavier(G, H, O, fan_in=O, fan_out=1, gain=gain)  # (G, H, O)
        else:  # the release's draws, in its order
            self.a1_src = _xavier(G, H, O, fan_in=2 * O, fan_out=1, gain=gain)  # (G, H, O)
            self.a1_dst = _xavier(G, H, O, fan_in=2 * O, fan_out=1, gain=gain)  # (G, H, O)
        self.W2 = _xavier(G, H * O, 1, fan_in=H * O, fan_out=1, gain=gain)  # (G, H*O, 1)
        if self.dynamic:  # layer 2 scores in an O-wide space (a one-wide GATv2 score is static)
            self.W2_src = _xavier(G, H * O, O, fan_in=H * O, fan_out=O, gain=gain)  # (G, H*O, O)
            self.W2_dst = _xavier(G, H * O, O, fan_in=H * O, fan_out=O, gain=gain)  # (G, H*O, O)
            self.a2 = _xavier(G, O, fan_in=O, fan_out=1, gain=gain)  # (G, O)
        else:
            self.a2_src = _xavier(G, 1, fan_in=2, fan_out=1, gain=gain)  # (G, 1)
            self.a2_dst = _xavier(G, 1, fan_in=2, fan_out=1, gain=gain)  # (G, 1)
        if not cfg.trainable:
            self.requires_grad_(False)
        if cfg.objective == "meta":  # distill/graph_meta.py: the last measured alignment, and when to measure
            self.meta_rows, self.meta_every, self.meta_step = cfg.meta_rows, cfg.meta_every, cfg.meta_step
            self.register_buffer("alignment", torch.zeros(G, K))  # (G, K) A_(g,d), saved with the module
            self.register_buffer("meta_calls", torch.zeros((), dtype=torch.long))  # training calls so far

    # ---- batched (fused) path -------------------------------------------------------------
    def compare_aggregate(self, protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, K, D) prototypes -> aggregated prototypes (G, K, D), ratios alpha (L, K, G)."""
        G, K, D = protos.shape
        L = G - 1
        if not self.hierarchical or L == 0:
            return protos, protos.new_zeros(L, K, G)
        Fl = protos[1:]  # (L, K, D)
        a1 = torch.softmax((Fl @ self.U) @ Fl.transpose(1, 2) * self.score_scale, dim=-1)  # (L, K, K)
        R = torch.bmm(a1, Fl)  # (L, K, D)
        VR = (self.V @ R.unsqueeze(-1)).squeeze(-1)  # (L, K, D)
        by_domain = protos.transpose(0, 1)  # (K, G, D)
        s = (VR.transpose(0, 1) @ by_domain.transpose(1, 2)).transpose(0, 1) * self.score_scale  # (L, K, G): s_j at level l
        level = torch.arange(1, G, device=protos.device)[:, None, None]  # (L, 1, 1)
        j = torch.arange(G, device=protos.device)[None, None, :]  # (1, 1, G)
        alpha = torch.softmax(s.masked_fill(j > level, float("-inf")), dim=-1)  # (L, K, G), 0 for j > l
        agg = (alpha.transpose(0, 1) @ by_domain).transpose(0, 1)  # (L, K, D)
        return torch.cat([protos[:1], agg], dim=0), alpha

    def _aggregate(self, att: torch.Tensor, Wh: torch.Tensor) -> torch.Tensor:
        """Attention-weighted neighbours, plus the node's own projection with `graph.residual`."""
        out = att @ Wh
        return out + Wh if self.residual else out

    def gat(self, x: torch.Tensor) -> torch.Tensor:
        """(G, K, D) node features -> (G, K) one scalar per domain node, all levels at once."""
        p, train = self.dropout, self.training
        x = F.dropout(x, p, train)
        Wh = x.unsqueeze(1) @ self.W1  # (G, H, K, O)
        if self.dynamic:  # e_ij = a . LeakyReLU(W_dst c_i + W_src c_j), c = x centred over the nodes
            c = standardised(x, dim=1).unsqueeze(1)  # (G, 1, K, D)
            pair = F.leaky_relu((c @ self.W1_dst).unsqueeze(-2) + (c @ self.W1).unsqueeze(-3), self.slope)  # (G, H, K, K, O)
            e = (pair @ self.a1[:, :, None, :, None]).squeeze(-1)  # (G, H, K, K)
        else:
            e = F.leaky_relu(Wh @ self.a1_src[..., None] + (Wh @ self.a1_dst[..., None]).transpose(-1, -2), self.slope)
        att = F.dropout(torch.softmax(e, dim=-1), p, train)  # (G, H, K, K)
        h = F.elu(self._aggregate(att, Wh))  # (G, H, K, O)
        h = F.dropout(h.permute(0, 2, 1, 3).flatten(2), p, train)  # (G, K, H*O)
        Wh2 = h @ self.W2  # (G, K, 1)
        if self.dynamic:
            c2 = standardised(h, dim=1)  # (G, K, H*O)
            pair2 = F.leaky_relu((c2 @ self.W2_dst).unsqueeze(2) + (c2 @ self.W2_src).unsqueeze(1), self.slope)  # (G, K, K, O)
            e2 = (pair2 @ self.a2[:, None, :, None]).squeeze(-1)  # (G, K, K)
        else:
            e2 = F.leaky_relu(Wh2 * self.a2_src[:, None] + (Wh2 * self.a2_dst[:, None]).transpose(1, 2), self.slope)  # (G, K, K)
        att2 = F.dropout(torch.softmax(e2, dim=-1), p, train)
        return F.elu(self._aggregate(att2, Wh2)).squeeze(-1)  # (G, K)

    def forward(self, protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, K, D) prototypes -> domain weights (G, K) (rows sum to 1), ratios (L, K, G)."""
        agg, alpha = self.compare_aggregate(protos)
        return torch.softmax(self.gat(agg), dim=-1), alpha

    # ---- reference path: level by level, domain by domain ---------------------------------
    def forward_loop(self, protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same result as `forward`, written as plain loops (reference for tests/benchmarks)."""
        G, K, D = protos.shape
        agg = [protos[0]]
        ratios = protos.new_zeros(G - 1, K, G)
        for l in range(1, G):
            if not self.hierarchical:
                agg.append(protos[l])
                continue
            Fl = protos[l]  # (K, D)
            R = torch.softmax(Fl @ self.U[l - 1] @ Fl.T * self.score_scale, dim=-1) @ Fl  # (K, D)
            rows = []
            for d in range(K):
                hist = protos[: l + 1, d]  # (l+1, D)
                s = hist @ (self.V[l - 1, d] @ R[d]) * self.score_scale  # (l+1,)
                alpha = torch.softmax(s, dim=0)
                ratios[l - 1, d, : l + 1] = alpha.detach()
                rows.append(alpha @ hist)
            agg.append(torch.stack(rows))
        weights = [torch.softmax(self._gat_level(g, agg[g]), dim=0) for g in range(G)]
        return torch.stack(weights), ratios

    def _gat_level(self, g: int, x: torch.Tensor) -> torch.Tensor:
        """One level's GAT, head by head: (K, D) -> (K,)."""
        p, train = self.dropout, self.training
        x = F.dropout(x, p, train)
        heads = []
        for h in range(self.heads):
            Wh = x @ self.W1[g, h]  # (K, O)
            if self.dynamic:
                c = standardised(x, dim=0)
                dst, src = c @ self.W1_dst[g, h], c @ self.W1[g, h]  # (K, O)
                e = torch.stack([torch.stack([F.leaky_relu(dst[i] + src[j], self.slope) @ self.a1[g, h]
                                              for j in range(len(x))]) for i in range(len(x))])  # (K, K)
            else:
                e = F.leaky_relu((Wh @ self.a1_src[g, h])[:, None] + (Wh @ self.a1_dst[g, h])[None, :], self.slope)
            att = F.dropout(torch.softmax(e, dim=1), p, train)
            heads.append(F.elu(self._aggregate(att, Wh)))
        x2 = F.dropout(torch.cat(heads, dim=1), p, train)  # (K, H*O)
        Wh2 = x2 @ self.W2[g]  # (K, 1)
        if self.dynamic:
            c = standardised(x2, dim=0)
            dst, src = c @ self.W2_dst[g], c @ self.W2_src[g]  # (K, O)
            e2 = torch.stack([torch.stack([F.leaky_relu(dst[i] + src[j], self.slope) @ self.a2[g]
                                           for j in range(len(x2))]) for i in range(len(x2))])  # (K, K)
        else:
            e2 = F.leaky_relu(Wh2 * self.a2_src[g] + (Wh2 * self.a2_dst[g]).T, self.slope)  # (K, K)
        att2 = F.dropout(torch.softmax(e2, dim=1), p, train)
        return F.elu(self._aggregate(att2, Wh2)).squeeze(-1)
