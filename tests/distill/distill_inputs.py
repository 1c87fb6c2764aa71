"""Synthetic teacher/student outputs for loss tests: domain-major, random right padding."""

from __future__ import annotations

import torch

from hrkd_ds.config import GraphConfig
from hrkd_ds.distill import ReferenceDistillLoss, RelationalDistillLoss
from hrkd_ds.models.encoder import EncoderOutputs


def make_mask(K: int, B: int, T: int, gen: torch.Generator, min_len: int = 2) -> torch.Tensor:
    """(K*B, T) 0/1 mask with random lengths in [min_len, T], at least one full row."""
    lens = torch.randint(min_len, T + 1, (K * B,), generator=gen)
    lens[0] = T
    return (torch.arange(T)[None, :] < lens[:, None]).long()


def make_outputs(mask, L, H, heads, C, gen, *, K=None, scores=True, requires_grad=False, dtype=torch.float32) -> EncoderOutputs:
    """Random EncoderOutputs; scores carry finfo.min at padded keys like the real model.

    With K, hidden states get a per-domain offset so domain prototypes differ (as real domains
    do); otherwise the graph sees K near-identical nodes and its gradients are rounding noise.
    """
    N, T = mask.shape

    def r(*shape):
        x = torch.randn(*shape, generator=gen, dtype=dtype)
        if K is not None and len(shape) == 3:
            x = x + 2.0 * torch.randn(K, 1, 1, shape[-1], generator=gen, dtype=dtype).expand(K, N // K, 1, shape[-1]).reshape(N, 1, shape[-1])
        return x.requires_grad_(requires_grad)

    att = []
    for _ in range(L):
        a = torch.randn(N, heads, T, T, generator=gen, dtype=dtype)
        if scores:
            a = a + (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        else:
            a = a.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(-1)
        att.append(a.requires_grad_(requires_grad))
    logits = r(N, C)
    return EncoderOutputs(
        logits=logits,
        all_logits=logits,
        embeddings=r(N, T, H),
        hidden_states=tuple(r(N, T, H) for _ in range(L)),
        attentions=tuple(att),
    )


def student_tensors(out: EncoderOutputs) -> list[torch.Tensor]:
    """Every leaf tensor of an EncoderOutputs (for gradient comparisons)."""
    return [out.logits, out.embeddings, *out.hidden_states, *out.attentions]


def graph_cfg(**kw) -> GraphConfig:
    """GraphConfig with dropout off by default (deterministic parity)."""
    kw.setdefault("dropout", 0.0)
    return GraphConfig(**kw)


def assert_compiles_like_eager(loss, so, to, mask, K: int) -> None:
    """torch.compile(fullgraph) of `loss` gives the eager value and gradients (student inputs and
    graph parameters)."""
    inputs = [so.embeddings, *so.attentions, *loss.params.graph.parameters()]
    eager = loss(so, to, mask, K)
    g_eager = torch.autograd.grad(eager.total, inputs)
    out = torch.compile(loss, backend="eager", fullgraph=True)(so, to, mask, K)
    g_comp = torch.autograd.grad(out.total, inputs)
    assert torch.allclose(out.total, eager.total, rtol=1e-6)
    for a, b in zip(g_comp, g_eager):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


# loss_pair's shapes: K domains, B rows each, T tokens, student/teacher widths and depths, C classes
PAIR_DIMS = dict(K=3, B=2, T=6, Hs=8, Ht=12, Ls=2, Lt=4, C=3)


def loss_pair(terms, seed: int = 5, temperature: float = 1.0, two_stage: bool = False):
    """(student out, teacher out, mask, labels, fused loss, loop loss) in float64 at PAIR_DIMS, the
    graph off, the two losses sharing their parameters (tests of single terms and recipes)."""
    K, B, T, Hs, Ht, Ls, Lt, C = PAIR_DIMS.values()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mask = make_mask(K, B, T, gen)
    so = make_outputs(mask, Ls, Hs, 2, C, gen, K=K, requires_grad=True, dtype=torch.float64, scores=False)
    to = make_outputs(mask, Lt, Ht, 2, C, gen, dtype=torch.float64, scores=False)
    labels = torch.randint(0, C, (K * B,), generator=gen)
    g = graph_cfg(enabled=False)
    fused = RelationalDistillLoss(Hs, Ht, Ls, Lt, K, g, terms=terms, temperature=temperature, two_stage=two_stage).double().eval()
    loop = ReferenceDistillLoss(Hs, Ht, Ls, Lt, K, g, terms=terms, temperature=temperature, params=fused.params,
                                two_stage=two_stage).eval()
    return so, to, mask, labels, fused, loop
