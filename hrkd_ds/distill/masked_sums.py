"""Per-(layer, domain) sums of mask * (s - t)^2 over lists of big tensors, one pass each way.

The attention maps and projected hidden states are the largest tensors of the loss; this autograd
function reads each once forward and once backward and writes its gradient once. Nothing big is
saved: backward recomputes d = s - t and writes grad = d * (mask * 2 * upstream[l, k(n)]).
Layers are looped (they arrive as separate tensors; stacking would copy them), domains never
are (rows are domain-major, so a (K, -1) view gives the domains).

On CUDA with Triton the kernels of `triton_masked_sums` do each direction in one launch; every
other case (CPU, CUDA without Triton, float64) takes the one torch path below. On the CPU,
`compiled=True` (`distill.compiled_terms`) instead runs the plain formula through torch.compile,
which fuses subtract, mask, square and reduce into one pass each way: about 2x faster for the
terms at the paper's shapes, after a compile of ~1-2 minutes per distinct shape, so it pays in long
runs with static shapes (`data.pad_to=max_length`); with shapes that change every step it does not.
"""

from __future__ import annotations

import functools

import torch

from hrkd_ds.distill import triton_masked_sums as triton_path
from hrkd_ds.distill.triton_masked_sums import DEFAULT_LAUNCH, LaunchConfig


def _sum_squares_per_domain(buf: torch.Tensor, K: int) -> torch.Tensor:
    """(N, ...) -> (K,) sum of squares per domain block. On CPU a batched dot (bmm) runs at
    ~1.2-1.8x the memory floor; on CUDA that bmm is a skinny GEMM (17x the floor on an H100), so
    a plain row reduction is used there."""
    if buf.is_cuda:
        flat = buf.view(K, -1)
        return torch.linalg.vecdot(flat, flat)
    flat = buf.view(K, 1, -1)
    return torch.bmm(flat, flat.transpose(1, 2)).view(K)


def _torch_forward(mask, K: int, students, teachers) -> torch.Tensor:
    """d = s - t into one reused buffer, d *= mask, per-domain sum of squares; (L, K)."""
    rows, buf = [], None
    for s, t in zip(students, teachers):
        if buf is None or buf.shape != s.shape:
            buf = torch.empty_like(s, memory_format=torch.contiguous_format)
        torch.sub(s, t, out=buf)
        buf.mul_(mask)
        rows.append(_sum_squares_per_domain(buf, K))
    return torch.stack(rows)


def _torch_backward(mask, grad_sums, K: int, pairs, needs) -> list:
    n = pairs[0].shape[0]
    grads: list[torch.Tensor | None] = []
    for i in range(len(pairs) // 2):
        need_s, need_t = needs[2 * i], needs[2 * i + 1]
        if not (need_s or need_t):
            grads += [None, None]
            continue
        scale = (2.0 * grad_sums[i]).repeat_interleave(n // K)  # (N,)
        weight = mask * scale.reshape(n, *([1] * (mask.dim() - 1)))  # small: mask-shaped
        g = torch.sub(pairs[2 * i], pairs[2 * i + 1])
        g.mul_(weight)
        grads += [g if need_s else None, g.neg() if need_t else None]
    return grads


class MaskedSquaredErrorSums(torch.autograd.Function):
    """(L, K) masked squared-error sums; see the module docstring for the passes."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, num_domains: int, launch: LaunchConfig, *pairs: torch.Tensor) -> torch.Tensor:
        # mask: 0/1 broadcastable to each tensor, batch dim first; pairs: s_0, t_0, s_1, t_1, ...
        ctx.num_domains, ctx.launch = num_domains, launch
        ctx.save_for_backward(mask, *pairs)
        ctx.use_triton = triton_path.usable(mask, pairs)
        forward = triton_path.forward if ctx.use_triton else _torch_forward
        args = (launch,) if ctx.use_triton else ()
        return forward(mask, num_domains, pairs[0::2], pairs[1::2], *args)

    @staticmethod
    def backward(ctx, grad_sums: torch.Tensor):
        mask, *pairs = ctx.saved_tensors
        grad_sums = grad_sums.contiguous()  # may arrive expanded (e.g. from a sum)
        needs = ctx.needs_input_grad[3:]
        if ctx.use_triton:
            grads = triton_path.backward(mask, grad_sums, ctx.num_domains, pairs, needs, ctx.launch)
        else:
            grads = _torch_backward(mask, grad_sums, ctx.num_domains, pairs, needs)
        return (None, None, None, *grads)


def _plain_sums(students: list[torch.Tensor], teachers: list[torch.Tensor], mask: torch.Tensor, K: int) -> torch.Tensor:
    return torch.stack([((s - t) * mask).reshape(K, -1).pow(2).sum(1) for s, t in zip(students, teachers)])


@functools.cache
def _compiled_sums():
    return torch.compile(_plain_sums, dynamic=False)  # built on first use: compiling costs minutes


def masked_squared_error_sums(students: list[torch.Tensor], teachers: list[torch.Tensor], mask: torch.Tensor,
                              num_domains: int, launch: LaunchConfig = DEFAULT_LAUNCH, compiled: bool = False) -> torch.Tensor:
    """(L, K) sums of masked squared differences, layer i = (students[i], teachers[i])."""
    if compiled and not students[0].is_cuda:
        return _compiled_sums()(list(students), list(teachers), mask, num_domains)
    pairs = [x.contiguous() for st in zip(students, teachers) for x in st]
    return MaskedSquaredErrorSums.apply(mask, num_domains, launch, *pairs)
