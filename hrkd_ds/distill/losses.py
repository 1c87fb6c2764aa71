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
class MaskedSquaredErrorSums(torch.autograd.Function):
    """Per-(layer, domain) sums of mask * (s - t)^2 over lists of big tensors, one pass each way.

    Forward: d = s - t into one reused buffer, d *= mask, per-domain dot(d, d) (rows are
    domain-major, so a (K, -1) view gives the domains). Nothing big is saved: backward
    recomputes d and writes grad = d * (mask * 2 * upstream[l, k(n)]) in place, i.e. one read of
    s and t and one write of the gradient per layer. Layers are looped (they arrive as separate
    tensors; stacking would copy them), domains never are.
    """

    @staticmethod
    def forward(ctx, mask: torch.Tensor, num_domains: int, *pairs: torch.Tensor) -> torch.Tensor:
        # mask: 0/1 broadcastable to each tensor, batch dim first; pairs: s_0, t_0, s_1, t_1, ...
        ctx.num_domains = num_domains
        ctx.save_for_backward(mask, *pairs)
        students, teachers = pairs[0::2], pairs[1::2]
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
        grads: list[torch.Tensor | None] = []
        for i in range(len(pairs) // 2):
            s, t = pairs[2 * i], pairs[2 * i + 1]
            need_s, need_t = ctx.needs_input_grad[2 + 2 * i], ctx.needs_input_grad[3 + 2 * i]
            if not (need_s or need_t):
                grads += [None, None]
                continue
            scale = (2.0 * grad_sums[i]).repeat_interleave(n // K)  # (N,)
            weight = mask * scale.reshape(n, *([1] * (mask.dim() - 1)))  # small: mask-shaped
            g = torch.sub(s, t)
            g.mul_(weight)
            grads += [g if need_s else None, g.neg() if need_t else None]
        return (None, None, *grads)


def masked_squared_error_sums(students: list[torch.Tensor], teachers: list[torch.Tensor], mask: torch.Tensor, num_domains: int) -> torch.Tensor:
    """(L, K) sums of masked squared differences, layer i = (students[i], teachers[i])."""
    pairs = [x.contiguous() for st in zip(students, teachers) for x in st]
    return MaskedSquaredErrorSums.apply(mask, num_domains, *pairs)
