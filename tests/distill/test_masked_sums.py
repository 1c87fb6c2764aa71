"""The torch path of the masked squared-error sums (CPU): values and gradients against plain autograd
in float64, for student and teacher gradients, and the single-backward rule of its in-place
gradient."""

from __future__ import annotations

import pytest
import torch

from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.terms import pair_mask, token_mask


def _case(kind: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    K, B, T, h, H = 3, 2, 7, 2, 5
    lens = torch.randint(1, T + 1, (K * B,), generator=gen)
    am = (torch.arange(T)[None] < lens[:, None]).long()
    mask, shape = (pair_mask(am, torch.float64), (K * B, h, T, T)) if kind == "att" else \
        (token_mask(am, torch.float64), (K * B, T, H))
    s = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2)]
    t = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2)]
    return K, mask, s, t, torch.randn(2, K, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["att", "hid"])
@pytest.mark.parametrize("grads_of", ["student", "teacher", "both"])
def test_values_and_gradients_match_plain_autograd(kind, grads_of):
    K, mask, s, t, w = _case(kind)
    runs = []
    for fused in (True, False):
        ss = [x.clone().requires_grad_(grads_of in ("student", "both")) for x in s]
        ts = [x.clone().requires_grad_(grads_of in ("teacher", "both")) for x in t]
        if fused:
            sums = masked_squared_error_sums(ss, ts, mask, K)
        else:
            sums = torch.stack([((a - b) * mask).reshape(K, -1).pow(2).sum(1) for a, b in zip(ss, ts)])
        (sums * w).sum().backward()
        runs.append((sums.detach(), [x.grad for x in ss + ts]))
    (fused_sums, fused_grads), (plain_sums, plain_grads) = runs
    assert torch.allclose(fused_sums, plain_sums, rtol=1e-12, atol=0)
    for a, b in zip(fused_grads, plain_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert b.abs().max() > 0 and torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_second_backward_through_the_same_graph_raises():
    K, mask, s, t, w = _case("att", seed=1)
    leaves = [x.clone().requires_grad_(True) for x in s]
    total = (masked_squared_error_sums(leaves, t, mask, K) * w).sum()
    torch.autograd.grad(total, leaves, retain_graph=True)
    with pytest.raises(RuntimeError, match="differentiated only once"):
        torch.autograd.grad(total, leaves)


def test_no_grad_forward_keeps_values():
    K, mask, s, t, w = _case("hid", seed=2)
    with torch.no_grad():
        sums = masked_squared_error_sums(s, t, mask, K)
    plain = torch.stack([((a - b) * mask).reshape(K, -1).pow(2).sum(1) for a, b in zip(s, t)])
    assert torch.allclose(sums, plain, rtol=1e-12, atol=0)
