"""Distillation loss terms: layer map, plain per-domain terms, and the fused masked-MSE kernel.

Masking uses the real attention mask, never values: a padded token contributes nothing to the
hidden/embedding terms, and an attention entry counts only when both its query and its key are
real tokens. Means are over valid entries (valid tokens x hidden, or valid pairs x heads).

When teacher and student head counts differ the attention term compares head-averaged maps
(mean over heads of the masked maps): it keeps the per-position relation and needs no learned
head mapping.

Inputs must be finite: our attention adds the finite `finfo.min` at padded keys, so the
difference there is finite and zeroed by multiplying with the mask (cheaper than a
`masked_fill`, which on CPU costs ~5x a multiply on these sizes).
"""

from __future__ import annotations

import torch

from hrkd_ds.errors import UserError


# ---- layer map --------------------------------------------------------------------------------
def resolve_layer_map(student_layers: int, teacher_layers: int, layer_map: list[int] | None = None) -> list[int]:
    """1-based teacher layer for each student layer: explicit, or uniform i * (L_t / L_s)."""
    if layer_map:
        if len(layer_map) != student_layers:
            raise UserError(f"config field 'distill.layer_map': {len(layer_map)} entries for {student_layers} student layers")
        bad = [j for j in layer_map if not 1 <= j <= teacher_layers]
        if bad:
            raise UserError(f"config field 'distill.layer_map': {bad} outside 1..{teacher_layers} (teacher depth)")
        return list(layer_map)
    if teacher_layers % student_layers:
        raise UserError(
            f"teacher depth {teacher_layers} is not a multiple of student depth {student_layers}: "
            "set 'distill.layer_map' (one 1-based teacher layer per student layer)"
        )
    step = teacher_layers // student_layers
    return [(i + 1) * step for i in range(student_layers)]


# ---- masks ------------------------------------------------------------------------------------
def token_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, T) 0/1 -> (N, T, 1) float mask of real tokens."""
    return attention_mask.to(dtype)[:, :, None]


def pair_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, T) -> (N, 1, T, T) float mask, 1 where query and key are both real tokens."""
    m = attention_mask.to(dtype)
    return m[:, None, :, None] * m[:, None, None, :]


def head_average(attn: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(N, h, T, T) -> (N, 1, T, T) mean over heads, padded entries zeroed first (no overflow)."""
    return (attn * pairs).mean(dim=1, keepdim=True)


# ---- plain terms (per-domain reference, small terms of the fused loss) -------------------------
def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (s - t)^2 over entries where the broadcast 0/1 `mask` is 1."""
    valid = mask.expand_as(student).bool()
    diff = torch.where(valid, student - teacher, torch.zeros((), dtype=student.dtype, device=student.device))
    return diff.pow(2).sum() / valid.sum().clamp_min(1)


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked MSE of (N, h, T, T) maps over valid (query, key) pairs; head-averaged if h differs."""
    pairs = pair_mask(attention_mask, student.dtype)  # (N, 1, T, T)
    if student.shape[1] != teacher.shape[1]:
        student, teacher = head_average(student, pairs), head_average(teacher, pairs)
    return masked_mse(student, teacher, pairs)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked MSE of (N, T, H) states over real tokens x hidden."""
    return masked_mse(student, teacher, token_mask(attention_mask, student.dtype))


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """TinyBERT soft CE: (-softmax(z_T/tau) * log_softmax(z_S/tau)).mean() over batch AND classes."""
    targets = torch.softmax(teacher_logits / temperature, dim=-1)
    return (-targets * torch.log_softmax(student_logits / temperature, dim=-1)).mean()


def soft_cross_entropy_per_domain(student_logits: torch.Tensor, teacher_logits: torch.Tensor, num_domains: int, temperature: float = 1.0) -> torch.Tensor:
    """(K*B, C) domain-major logits -> (K,) soft CE, each the mean over its batch and classes."""
    targets = torch.softmax(teacher_logits / temperature, dim=-1)
    ce = -targets * torch.log_softmax(student_logits / temperature, dim=-1)  # (N, C)
    return ce.reshape(num_domains, -1).mean(dim=1)


# ---- fused masked squared error ---------------------------------------------------------------
# CUDA path: two Triton kernels, one pass each way. Forward reads s, t and the (broadcast) mask
# once and writes one fp32 partial sum per (example, block); backward reads s, t, mask once and
# writes grad(s) (and -grad for t when needed). Partials are summed per domain by torch (no atomics:
# deterministic). Without Triton (or for float64 / unusual mask layouts) CUDA falls back to a torch
# path with a plain reduction. CPU keeps the original sub / mul / bmm path, which is at ~1.2-1.8x
# its memory floor there; on CUDA that bmm is a (K, 1, M) x (K, M, 1) GEMM that cuBLAS runs on
# ~K blocks (17x the floor on an H100).
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FWD_BLOCK, _BWD_BLOCK, _NUM_WARPS = 8192, 8192, 8
_ONE_LAUNCH = True  # all layers in one launch per direction (address table), else one per layer
_triton_state: dict = {}


def _triton_kernels():
    """(forward, backward) jitted kernels, or None when triton is not importable."""
    if "kernels" not in _triton_state:
        try:
            import triton  # noqa: F401
            import triton.language as tl
        except Exception:  # noqa: BLE001 - any import failure means: use the torch path
            _triton_state["kernels"] = None
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

        _triton_state["kernels"] = (fwd, bwd)
        _triton_state["kernels_all"] = (fwd_all, bwd_all)
    return _triton_state["kernels"]


def _mask_layout(shape: torch.Size, mask: torch.Tensor) -> tuple[int, int] | None:
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
    lead = len(pattern) - len(pattern.lstrip("b"))
    core = pattern[lead:]
    matched = len(core) - len(core.lstrip("m"))
    if "m" in core[matched:]:
        return None  # b* m* b* only
    bd = 1
    for ms in mask.shape[1:]:
        bd *= ms
    # trailing broadcast elements per mask entry = product of the trailing 'b' dims
    c = 1
    for ms, ss in reversed(list(zip(mask.shape[1:], shape[1:]))):
        if ms == ss:
            if ss != 1:
                break
        else:
            c *= ss
    return bd, c


def _use_triton(mask: torch.Tensor, pairs: tuple[torch.Tensor, ...]) -> bool:
    s0 = pairs[0]
    if s0.numel() == 0 or not s0.is_cuda or s0.dtype not in _TRITON_DTYPES or mask.dtype != s0.dtype or not mask.is_cuda:
        return False
    for x in pairs:
        if x.shape != s0.shape or x.dtype != s0.dtype or not x.is_contiguous() or x.device != s0.device:
            return False
        if x.numel() >= 2**31:
            return False
    if _mask_layout(s0.shape, mask) is None:
        return False
    return _triton_kernels() is not None


class MaskedSquaredErrorSums(torch.autograd.Function):
    """Per-(layer, domain) sums of mask * (s - t)^2 over lists of big tensors, one pass each way.

    CPU forward: d = s - t into one reused buffer, d *= mask, per-domain dot(d, d) (rows are
    domain-major, so a (K, -1) view gives the domains). Nothing big is saved: backward
    recomputes d and writes grad = d * (mask * 2 * upstream[l, k(n)]) in place, i.e. one read of
    s and t and one write of the gradient per layer. Layers are looped (they arrive as separate
    tensors; stacking would copy them), domains never are.

    CUDA: the same formulas in one Triton kernel per layer and direction (see `_triton_kernels`),
    or, without Triton, the torch ops with a plain per-domain reduction instead of the bmm.
    """

    @staticmethod
    def forward(ctx, mask: torch.Tensor, num_domains: int, *pairs: torch.Tensor) -> torch.Tensor:
        # mask: 0/1 broadcastable to each tensor, batch dim first; pairs: s_0, t_0, s_1, t_1, ...
        ctx.num_domains = num_domains
        ctx.save_for_backward(mask, *pairs)
        students, teachers = pairs[0::2], pairs[1::2]
        ctx.use_triton = _use_triton(mask, pairs)
        if ctx.use_triton:
            return _triton_forward(mask, num_domains, students, teachers)
        if students[0].is_cuda:
            return _torch_cuda_forward(mask, num_domains, students, teachers)
        sums = students[0].new_empty(len(students), num_domains)  # (L, K)
        buf = None
        for i, (s, t) in enumerate(zip(students, teachers)):
            if buf is None or buf.shape != s.shape:
                buf = torch.empty_like(s, memory_format=torch.contiguous_format)
            torch.sub(s, t, out=buf)
            buf.mul_(mask)
            flat = buf.view(num_domains, 1, -1)  # (K, 1, M)
            sums[i] = torch.bmm(flat, flat.transpose(1, 2)).view(num_domains)
        return sums

    @staticmethod
    def backward(ctx, grad_sums: torch.Tensor):
        mask, *pairs = ctx.saved_tensors
        grad_sums = grad_sums.contiguous()  # may arrive expanded (e.g. from a sum)
        K = ctx.num_domains
        n = pairs[0].shape[0]
        if ctx.use_triton and _ONE_LAUNCH:
            return (None, None, *_triton_backward_all(mask, grad_sums, K, pairs, ctx.needs_input_grad[2:]))
        grads: list[torch.Tensor | None] = []
        for i in range(len(pairs) // 2):
            s, t = pairs[2 * i], pairs[2 * i + 1]
            need_s, need_t = ctx.needs_input_grad[2 + 2 * i], ctx.needs_input_grad[3 + 2 * i]
            if not (need_s or need_t):
                grads += [None, None]
                continue
            if ctx.use_triton:
                grads += _triton_backward(mask, grad_sums[i], K, s, t, need_s, need_t)
                continue
            scale = (2.0 * grad_sums[i]).repeat_interleave(n // K)  # (N,)
            weight = mask * scale.reshape(n, *([1] * (mask.dim() - 1)))  # small: mask-shaped
            g = torch.sub(s, t)
            g.mul_(weight)
            grads += [g if need_s else None, g.neg() if need_t else None]
        return (None, None, *grads)


def _torch_cuda_forward(mask, K, students, teachers) -> torch.Tensor:
    """CUDA without Triton: same ops as CPU, but a plain (K, M) reduction rather than the bmm."""
    rows = []
    buf = None
    for s, t in zip(students, teachers):
        if buf is None or buf.shape != s.shape:
            buf = torch.empty_like(s, memory_format=torch.contiguous_format)
        torch.sub(s, t, out=buf)
        buf.mul_(mask)
        flat = buf.view(K, -1)
        rows.append(torch.linalg.vecdot(flat, flat))
    return torch.stack(rows)


def _address_table(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """int64 (R, G) table of device addresses / indices, uploaded without a host-device sync."""
    return torch.tensor(rows, dtype=torch.int64).pin_memory().to(device, non_blocking=True)


def _triton_forward(mask, K, students, teachers) -> torch.Tensor:
    fwd, _ = _triton_kernels()
    s0 = students[0]
    N, E = s0.shape[0], s0[0].numel()
    bd, c = _mask_layout(s0.shape, mask)
    P = -(-E // _FWD_BLOCK)
    part = torch.empty(len(students), N, P, device=s0.device, dtype=torch.float32)
    if _ONE_LAUNCH:
        fwd_all, _ = _triton_state["kernels_all"]
        tab = _address_table([[s.data_ptr() for s in students], [t.data_ptr() for t in teachers]], s0.device)
        fwd_all[(P, N, len(students))](tab, mask, part, E, bd, c, P, BLOCK=_FWD_BLOCK, num_warps=_NUM_WARPS)
    else:
        for i, (s, t) in enumerate(zip(students, teachers)):
            fwd[(P, N)](s, t, mask, part[i], E, bd, c, P, BLOCK=_FWD_BLOCK, num_warps=_NUM_WARPS)
    return part.view(len(students), K, -1).sum(-1).to(s0.dtype)  # (L, K)


def _triton_backward(mask, grad_row, K, s, t, need_s, need_t) -> list:
    _, bwd = _triton_kernels()
    N, E = s.shape[0], s[0].numel()
    bd, c = _mask_layout(s.shape, mask)
    gs = torch.empty_like(s) if need_s else None
    gt = torch.empty_like(t) if need_t else None
    any_out = gs if gs is not None else gt
    bwd[(-(-E // _BWD_BLOCK), N)](s, t, mask, grad_row, gs if need_s else any_out, gt if need_t else any_out,
                                  E, bd, c, N // K, BLOCK=_BWD_BLOCK, WRITE_S=need_s, WRITE_T=need_t, num_warps=_NUM_WARPS)
    return [gs, gt]


def _triton_backward_all(mask, grad_sums, K, pairs, needs) -> list:
    """Gradients of every layer, one launch per distinct (need_s, need_t) combination."""
    _, bwd_all = _triton_state["kernels_all"]
    s0 = pairs[0]
    N, E = s0.shape[0], s0[0].numel()
    bd, c = _mask_layout(s0.shape, mask)
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
        bwd_all[(-(-E // _BWD_BLOCK), N, len(layers))](tab, mask, grad_sums, E, bd, c, N // K, K, BLOCK=_BWD_BLOCK,
                                                       WRITE_S=need_s, WRITE_T=need_t, num_warps=_NUM_WARPS)
    return grads


def masked_squared_error_sums(students: list[torch.Tensor], teachers: list[torch.Tensor], mask: torch.Tensor, num_domains: int) -> torch.Tensor:
    """(L, K) sums of masked squared differences, layer i = (students[i], teachers[i])."""
    pairs = [x.contiguous() for st in zip(students, teachers) for x in st]
    return MaskedSquaredErrorSums.apply(mask, num_domains, *pairs)
