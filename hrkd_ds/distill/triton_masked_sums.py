"""CUDA kernels for the fused masked squared-error sums: one pass over each big tensor per direction.

Forward reads s, t and the (broadcast) mask once and writes one fp32 partial sum per (example,
block); backward reads them once more and writes grad(s) (and -grad(s) for t when needed).
Partials are summed per domain by torch (no atomics: deterministic). With `one_launch` every
layer goes in one launch per direction through a table of device addresses; otherwise one
launch per layer (kept for the GPU benchmark and tests).

Triton is optional: `usable` is False without it, and the caller takes its torch path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class LaunchConfig:
    """Block sizes, warps and launch mode; the defaults were chosen on an H100 (docs/BENCHMARKS.md)."""

    fwd_block: int = 8192
    bwd_block: int = 8192
    num_warps: int = 8
    one_launch: bool = True


DEFAULT_LAUNCH = LaunchConfig()


@functools.cache
def kernels() -> dict | None:
    """The jitted kernels by name, or None when triton is not importable (lazy: optional dependency)."""
    try:
        import triton
        import triton.language as tl
    except Exception:  # noqa: BLE001 - any import failure means: use the torch path
        return None

    @triton.jit
    def load_diff(s_ptr, t_ptr, m_ptr, n, pid, E, BD, C, BLOCK: tl.constexpr):
        # one BLOCK of example n (s/t contiguous, E elements each; mask (N, 1.., BD, 1..)):
        # (s - t) and the broadcast mask in float32, the element addresses, the bounds
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        ok = offs < E
        at = n.to(tl.int64) * E + offs
        s = tl.load(s_ptr + at, mask=ok, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + at, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + n.to(tl.int64) * BD + (offs % (BD * C)) // C, mask=ok, other=0.0).to(tl.float32)
        return s - t, m, at, ok

    @triton.jit
    def fwd(s_ptr, t_ptr, m_ptr, part_ptr, E, BD, C, P, BLOCK: tl.constexpr):
        # one example n per grid row
        pid, n = tl.program_id(0), tl.program_id(1)
        diff, m, at, ok = load_diff(s_ptr, t_ptr, m_ptr, n, pid, E, BD, C, BLOCK)
        d = diff * m
        tl.store(part_ptr + n.to(tl.int64) * P + pid, tl.sum(d * d, axis=0))

    @triton.jit
    def bwd(s_ptr, t_ptr, m_ptr, g_ptr, gs_ptr, gt_ptr, E, BD, C, PER_DOMAIN,
            BLOCK: tl.constexpr, WRITE_S: tl.constexpr, WRITE_T: tl.constexpr):
        pid, n = tl.program_id(0), tl.program_id(1)
        scale = 2.0 * tl.load(g_ptr + n // PER_DOMAIN).to(tl.float32)
        diff, m, at, ok = load_diff(s_ptr, t_ptr, m_ptr, n, pid, E, BD, C, BLOCK)
        g = diff * (m * scale)
        if WRITE_S:
            tl.store(gs_ptr + at, g.to(gs_ptr.dtype.element_ty), mask=ok)
        if WRITE_T:
            tl.store(gt_ptr + at, (-g).to(gt_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def fwd_all(tab_ptr, m_ptr, part_ptr, E, BD, C, P, BLOCK: tl.constexpr):
        # every layer in one launch: tab = int64 (2, L) addresses of s_l, t_l; grid (P, N, L)
        pid, n, lay = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        ptr_ty = tl.pointer_type(m_ptr.dtype.element_ty)
        s_ptr = tl.load(tab_ptr + lay).to(ptr_ty)
        t_ptr = tl.load(tab_ptr + tl.num_programs(2) + lay).to(ptr_ty)
        diff, m, at, ok = load_diff(s_ptr, t_ptr, m_ptr, n, pid, E, BD, C, BLOCK)
        d = diff * m
        row = lay.to(tl.int64) * tl.num_programs(1) + n
        tl.store(part_ptr + row * P + pid, tl.sum(d * d, axis=0))

    @triton.jit
    def bwd_all(tab_ptr, m_ptr, g_ptr, E, BD, C, PER_DOMAIN, K,
                BLOCK: tl.constexpr, WRITE_S: tl.constexpr, WRITE_T: tl.constexpr):
        # tab = int64 (5, G): s, t, grad_s, grad_t addresses and the layer index; grid (P, N, G)
        pid, n, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        G = tl.num_programs(2)
        ptr_ty = tl.pointer_type(m_ptr.dtype.element_ty)
        s_ptr = tl.load(tab_ptr + j).to(ptr_ty)
        t_ptr = tl.load(tab_ptr + G + j).to(ptr_ty)
        lay = tl.load(tab_ptr + 4 * G + j)
        scale = 2.0 * tl.load(g_ptr + lay * K + n // PER_DOMAIN).to(tl.float32)
        diff, m, at, ok = load_diff(s_ptr, t_ptr, m_ptr, n, pid, E, BD, C, BLOCK)
        g = diff * (m * scale)
        if WRITE_S:
            gs_ptr = tl.load(tab_ptr + 2 * G + j).to(ptr_ty)
            tl.store(gs_ptr + at, g.to(ptr_ty.element_ty), mask=ok)
        if WRITE_T:
            gt_ptr = tl.load(tab_ptr + 3 * G + j).to(ptr_ty)
            tl.store(gt_ptr + at, (-g).to(ptr_ty.element_ty), mask=ok)

    return {"fwd": fwd, "bwd": bwd, "fwd_all": fwd_all, "bwd_all": bwd_all}


def mask_layout(shape: torch.Size, mask: torch.Tensor) -> tuple[int, int] | None:
    """(BD, C) when `mask` broadcasts to `shape` as (N, 1.., BD.., 1..) with C trailing elements per
    mask entry and contiguous storage, so mask index = n * BD + (e % (BD * C)) // C; else None."""
    if mask.dim() != len(shape) or mask.shape[0] != shape[0] or not mask.is_contiguous():
        return None
    kinds = []  # 'b' broadcast dim, 'm' matched dim (size-1-in-both dims are neutral)
    for ms, ss in zip(mask.shape[1:], shape[1:]):
        if ms == ss:
            if ss != 1:
                kinds.append("m")
        elif ms == 1:
            kinds.append("b")
        else:
            return None
    pattern = "".join(kinds)
    core = pattern[len(pattern) - len(pattern.lstrip("b")):]
    matched = len(core) - len(core.lstrip("m"))
    if "m" in core[matched:]:
        return None  # b* m* b* only
    bd = 1
    for ms in mask.shape[1:]:
        bd *= ms
    c = 1  # trailing broadcast elements per mask entry = product of the trailing 'b' dims
    for ms, ss in reversed(list(zip(mask.shape[1:], shape[1:]))):
        if ms == ss:
            if ss != 1:
                break
        else:
            c *= ss
    return bd, c


def usable(mask: torch.Tensor, pairs: tuple[torch.Tensor, ...]) -> bool:
    """Triton importable, CUDA tensors of one float dtype, contiguous, and a mask layout it indexes."""
    s0 = pairs[0]
    if s0.numel() == 0 or not s0.is_cuda or s0.dtype not in DTYPES or mask.dtype != s0.dtype or not mask.is_cuda:
        return False
    for x in pairs:
        if x.shape != s0.shape or x.dtype != s0.dtype or not x.is_contiguous() or x.device != s0.device:
            return False
        if x.numel() >= 2**31:
            return False
    return mask_layout(s0.shape, mask) is not None and kernels() is not None


def _address_table(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """int64 (R, G) table of device addresses / indices, uploaded without a host-device sync."""
    return torch.tensor(rows, dtype=torch.int64).pin_memory().to(device, non_blocking=True)


def forward(mask, K: int, students, teachers, launch: LaunchConfig = DEFAULT_LAUNCH) -> torch.Tensor:
    """(L, K) masked squared-error sums."""
    k = kernels()
    s0 = students[0]
    N, E = s0.shape[0], s0[0].numel()
    bd, c = mask_layout(s0.shape, mask)
    P = -(-E // launch.fwd_block)
    part = torch.empty(len(students), N, P, device=s0.device, dtype=torch.float32)
    if launch.one_launch:
        tab = _address_table([[s.data_ptr() for s in students], [t.data_ptr() for t in teachers]], s0.device)
        k["fwd_all"][(P, N, len(students))](tab, mask, part, E, bd, c, P, BLOCK=launch.fwd_block, num_warps=launch.num_warps)
    else:
        for i, (s, t) in enumerate(zip(students, teachers)):
            k["fwd"][(P, N)](s, t, mask, part[i], E, bd, c, P, BLOCK=launch.fwd_block, num_warps=launch.num_warps)
    return part.view(len(students), K, -1).sum(-1).to(s0.dtype)  # (L, K)


def backward(mask, grad_sums, K: int, pairs, needs, launch: LaunchConfig = DEFAULT_LAUNCH) -> list:
    """Gradients for pairs (s_0, t_0, s_1, ...); None where `needs` says no gradient is wanted."""
    if not launch.one_launch:
        grads: list = []
        for i in range(len(pairs) // 2):
            need_s, need_t = bool(needs[2 * i]), bool(needs[2 * i + 1])
            grads += _backward_layer(mask, grad_sums[i], K, pairs[2 * i], pairs[2 * i + 1], need_s, need_t, launch) \
                if need_s or need_t else [None, None]
        return grads
    return _backward_all(mask, grad_sums, K, pairs, needs, launch)


def _backward_layer(mask, grad_row, K, s, t, need_s, need_t, launch) -> list:
    N, E = s.shape[0], s[0].numel()
    bd, c = mask_layout(s.shape, mask)
    gs = torch.empty_like(s) if need_s else None
    gt = torch.empty_like(t) if need_t else None
    any_out = gs if gs is not None else gt
    kernels()["bwd"][(-(-E // launch.bwd_block), N)](
        s, t, mask, grad_row, gs if need_s else any_out, gt if need_t else any_out, E, bd, c, N // K,
        BLOCK=launch.bwd_block, WRITE_S=need_s, WRITE_T=need_t, num_warps=launch.num_warps)
    return [gs, gt]


def _backward_all(mask, grad_sums, K, pairs, needs, launch) -> list:
    """Every layer's gradients, one launch per distinct (need_s, need_t) combination."""
    s0 = pairs[0]
    N, E = s0.shape[0], s0[0].numel()
    bd, c = mask_layout(s0.shape, mask)
    grads: list[torch.Tensor | None] = [None] * len(pairs)
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i in range(len(pairs) // 2):
        key = (bool(needs[2 * i]), bool(needs[2 * i + 1]))
        if any(key):
            groups.setdefault(key, []).append(i)
    for (need_s, need_t), layers in groups.items():
        rows: list[list[int]] = [[], [], [], [], []]
        for i in layers:
            s, t = pairs[2 * i], pairs[2 * i + 1]
            gs = torch.empty_like(s) if need_s else None
            gt = torch.empty_like(t) if need_t else None
            grads[2 * i], grads[2 * i + 1] = gs, gt
            for row, v in zip(rows, (s.data_ptr(), t.data_ptr(), gs.data_ptr() if need_s else 0, gt.data_ptr() if need_t else 0, i)):
                row.append(v)
        tab = _address_table(rows, s0.device)
        kernels()["bwd_all"][(-(-E // launch.bwd_block), N, len(layers))](
            tab, mask, grad_sums, E, bd, c, N // K, K, BLOCK=launch.bwd_block,
            WRITE_S=need_s, WRITE_T=need_t, num_warps=launch.num_warps)
    return grads
