"""Per-(layer, domain) sums of mask * (s - t)^2 over lists of big tensors, few passes each way.

The attention maps and projected hidden states are the largest tensors of the loss. Forward
writes m = mask * (s - t) once per layer (subtract, then mask in place) and reduces it per domain;
since mask is 0/1, the sum of m * m is the loss and 2 * upstream[l, k(n)] * m is the gradient, so
backward scales the saved m in place: one read and one write, and no freshly allocated (page-
faulting) gradient. That is 8 passes over each big tensor against the 5 of the bytes floor (read s
and t forward, read them again backward, write the gradient), where recomputing s - t in backward
took 11. The price is m kept alive between forward and backward (the size of the student tensors),
and a graph that can be differentiated once: a second backward through the same graph
(`retain_graph=True`) raises instead of reading scaled values. Layers are looped (they arrive as
separate tensors; stacking would copy them), domains never are (rows are domain-major, so a
(K, -1) view gives the domains).

On CUDA with Triton the kernels of `triton_masked_sums` do each direction in one launch and save
nothing big; every other case (CPU, CUDA without Triton, float64) takes the torch path below. On
the CPU, `compiled=True` (`distill.compiled_terms`) instead runs the plain formula through
torch.compile (subtract, mask, square and reduce fused), after a compile of ~1-2 minutes per
distinct shape, so it is meant for long runs with static shapes (`data.pad_to=max_length`).
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


def _torch_forward(mask, K: int, students, teachers) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """m = mask * (s - t) per layer (kept for backward) and its per-domain sums of squares; (L, K)."""
    rows, masked = [], []
    for s, t in zip(students, teachers):
        m = torch.sub(s, t)  # inputs are contiguous (see masked_squared_error_sums)
        m.mul_(mask)
        rows.append(_sum_squares_per_domain(m, K))
        masked.append(m)
    return torch.stack(rows), masked


def _torch_backward(masked: list[torch.Tensor], grad_sums: torch.Tensor, K: int, needs) -> list:
    """grad of s = 2 * upstream[l, k] * m, written over the saved m (grad of t is its negation)."""
    grads: list[torch.Tensor | None] = []
    for i, m in enumerate(masked):
        need_s, need_t = needs[2 * i], needs[2 * i + 1]
        if not (need_s or need_t):
            grads += [None, None]
            continue
        m.view(K, -1).mul_((2.0 * grad_sums[i]).unsqueeze(1))
        grads += [m if need_s else None, (m.neg() if need_s else m.neg_()) if need_t else None]
    return grads


class MaskedSquaredErrorSums(torch.autograd.Function):
    """(L, K) masked squared-error sums; see the module docstring for the passes."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, num_domains: int, launch: LaunchConfig, *pairs: torch.Tensor) -> torch.Tensor:
        # mask: 0/1 broadcastable to each tensor, batch dim first; pairs: s_0, t_0, s_1, t_1, ...
        ctx.num_domains, ctx.launch, ctx.used = num_domains, launch, False
        ctx.use_triton = triton_path.usable(mask, pairs)
        if ctx.use_triton:
            ctx.save_for_backward(mask, *pairs)
            return triton_path.forward(mask, num_domains, pairs[0::2], pairs[1::2], launch)
        sums, masked = _torch_forward(mask, num_domains, pairs[0::2], pairs[1::2])
        ctx.save_for_backward(*masked)
        return sums

    @staticmethod
    def backward(ctx, grad_sums: torch.Tensor):
        if ctx.used:
            raise RuntimeError("masked_squared_error_sums: the torch path scales its saved differences in place, "
                               "so its graph can be differentiated only once (no retain_graph=True reuse)")
        grad_sums = grad_sums.contiguous()  # may arrive expanded (e.g. from a sum)
        needs = ctx.needs_input_grad[3:]
        if ctx.use_triton:
            mask, *pairs = ctx.saved_tensors
            grads = triton_path.backward(mask, grad_sums, ctx.num_domains, pairs, needs, ctx.launch)
        else:
            ctx.used = True
            grads = _torch_backward(list(ctx.saved_tensors), grad_sums, ctx.num_domains, needs)
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
