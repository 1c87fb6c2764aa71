"""Fused masked squared-error sums: the CUDA (Triton / torch fallback) paths vs a float64 reference.

The CUDA tests are skipped where no GPU is present; the mask-layout helper is tested everywhere.
"""

from __future__ import annotations

import pytest
import torch

from hrkd_ds.distill import triton_masked_sums as TK
from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.terms import pair_mask, token_mask

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_mask_layout():
    assert TK.mask_layout(torch.Size((6, 3, 7, 7)), torch.ones(6, 1, 7, 7)) == (49, 1)
    assert TK.mask_layout(torch.Size((6, 7, 50)), torch.ones(6, 7, 1)) == (7, 50)
    assert TK.mask_layout(torch.Size((6, 1, 7, 7)), torch.ones(6, 1, 7, 7)) == (49, 1)
    assert TK.mask_layout(torch.Size((6, 7, 50)), torch.ones(6, 7, 50)) == (350, 1)
    assert TK.mask_layout(torch.Size((6, 3, 7, 5)), torch.ones(6, 1, 7, 1)) == (7, 5)
    assert TK.mask_layout(torch.Size((6, 3, 7, 7)), torch.ones(6, 3, 1, 7)) is None  # m b m
    assert TK.mask_layout(torch.Size((6, 3, 7, 7)), torch.ones(1, 1, 7, 7)) is None  # batch broadcast
    assert TK.mask_layout(torch.Size((6, 3, 7, 7)), torch.ones(6, 7, 7, 1).transpose(1, 3)) is None  # strided


def _case(K, B, T, h, H, kind, dtype, seed, t_grad):
    gen = torch.Generator().manual_seed(seed)
    N = K * B
    lens = torch.randint(1, T + 1, (N,), generator=gen)
    am = (torch.arange(T)[None] < lens[:, None]).long()
    if kind == "att":
        mask, shape = pair_mask(am, torch.float32), (N, h, T, T)
        pad = (1 - am[:, None, None, :].float()) * torch.finfo(torch.float32).min
    else:
        mask, shape, pad = token_mask(am, torch.float32), (N, T, H), 0.0
    ss = [torch.randn(shape, generator=gen) + pad for _ in range(3)]
    ts = [torch.randn(shape, generator=gen) + pad for _ in range(3)]
    w = torch.randn(3, K, generator=gen)
    return mask, ss, ts, w


def _ref(mask, ss, ts, w, K):
    ss = [s.double().requires_grad_(True) for s in ss]
    ts = [t.double().requires_grad_(True) for t in ts]
    sums = torch.stack([((s - t) * mask.double()).reshape(K, -1).pow(2).sum(1) for s, t in zip(ss, ts)])
    (sums * w.double()).sum().backward()
    return sums.detach(), [s.grad for s in ss], [t.grad for t in ts]


def _rel(x, r):
    assert torch.isfinite(x).all()
    return ((x.double().cpu() - r).norm() / r.norm()).item()


@cuda
@pytest.mark.parametrize("kind", ["att", "hid"])
@pytest.mark.parametrize("shape", [(3, 2, 37, 3, 50), (5, 4, 128, 12, 96), (2, 1, 5, 1, 3)], ids=str)
@pytest.mark.parametrize("mode", ["one_launch", "per_layer", "fallback"])
@pytest.mark.parametrize("t_grad", [False, True])
def test_cuda_matches_float64(kind, shape, mode, t_grad, monkeypatch):
    fallback = mode == "fallback"
    launch = TK.LaunchConfig(one_launch=mode == "one_launch")
    K = shape[0]
    mask, ss, ts, w = _case(*shape, kind, torch.float32, seed=sum(shape) + fallback + 2 * t_grad, t_grad=t_grad)
    ref, gs_ref, gt_ref = _ref(mask, ss, ts, w, K)
    if fallback:
        monkeypatch.setattr(TK, "usable", lambda *a: False)
    dev = torch.device("cuda")
    s_d = [s.to(dev).requires_grad_(True) for s in ss]
    t_d = [t.to(dev).requires_grad_(t_grad) for t in ts]
    sums = masked_squared_error_sums(s_d, t_d, mask.to(dev), K, launch)
    assert sums.shape == (3, K) and sums.dtype == torch.float32
    (sums * w.to(dev)).sum().backward()
    assert _rel(sums.detach(), ref) < 1e-5
    for s, g in zip(s_d, gs_ref):
        assert _rel(s.grad, g) < 1e-5
    for t, g in zip(t_d, gt_ref):
        assert (t.grad is None) != t_grad
        if t_grad:
            assert _rel(t.grad, g) < 1e-5


@cuda
def test_triton_path_taken_when_available():
    pytest.importorskip("triton")
    mask = torch.ones(4, 1, 8, 8, device="cuda")
    s = torch.randn(4, 2, 8, 8, device="cuda")
    assert TK.usable(mask, (s, s.clone()))
    assert not TK.usable(mask.double(), (s.double(), s.double()))  # float64 -> torch path


@cuda
@pytest.mark.parametrize("one_launch", [True, False])
def test_cuda_mixed_needs(one_launch):
    """Layers needing grads for s only, s and t, t only, or nothing, in one call."""
    launch = TK.LaunchConfig(one_launch=one_launch)
    K = 3
    mask, ss, ts, w = _case(K, 2, 19, 2, 30, "hid", torch.float32, seed=7, t_grad=True)
    ss, ts, w = ss + [ss[0] * 0.5], ts + [ts[1] + 1.0], torch.cat([w, w[:1]])
    ref, gs_ref, gt_ref = _ref(mask, ss, ts, w, K)
    needs = [(True, False), (True, True), (False, True), (False, False)]
    dev = torch.device("cuda")
    s_d = [s.to(dev).requires_grad_(a) for s, (a, _) in zip(ss, needs)]
    t_d = [t.to(dev).requires_grad_(b) for t, (_, b) in zip(ts, needs)]
    sums = masked_squared_error_sums(s_d, t_d, mask.to(dev), K, launch)
    (sums * w.to(dev)).sum().backward()
    assert _rel(sums.detach(), ref) < 1e-5
    for (a, b), s, t, gs, gt in zip(needs, s_d, t_d, gs_ref, gt_ref):
        assert (s.grad is not None) == a and (t.grad is not None) == b
        if a:
            assert _rel(s.grad, gs) < 1e-5
        if b:
            assert _rel(t.grad, gt) < 1e-5
