"""distill.compiled_terms: the masked squared-error sums through torch.compile (Inductor's C++ code
on the CPU) give the eager function's values and gradients."""

from __future__ import annotations

import torch

from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.terms import pair_mask, token_mask


def test_compiled_sums_match_eager_values_and_gradients():
    gen = torch.Generator().manual_seed(3)
    K, B, T, h, H = 3, 2, 9, 2, 5
    lens = torch.randint(1, T + 1, (K * B,), generator=gen)
    am = (torch.arange(T)[None] < lens[:, None]).long()
    cases = [(pair_mask(am, torch.float32), (K * B, h, T, T)), (token_mask(am, torch.float32), (K * B, T, H))]
    for mask, shape in cases:
        s = [torch.randn(shape, generator=gen) for _ in range(2)]
        t = [torch.randn(shape, generator=gen) for _ in range(2)]
        w = torch.randn(2, K, generator=gen)
        grads = []
        for compiled in (False, True):
            leaves = [x.clone().requires_grad_(True) for x in s]
            sums = masked_squared_error_sums(leaves, t, mask, K, compiled=compiled)
            (sums * w).sum().backward()
            grads.append((sums.detach(), [x.grad for x in leaves]))
        (eager, g_eager), (comp, g_comp) = grads
        assert torch.allclose(comp, eager, rtol=1e-5, atol=1e-6)
        assert not torch.equal(eager, torch.zeros_like(eager))
        for a, b in zip(g_comp, g_eager):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
