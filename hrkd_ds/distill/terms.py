"""Masks and the plain (unfused) distillation terms: the per-domain reference and the small terms.

Masking uses the real attention mask, never values: a padded token contributes nothing to the
hidden/embedding terms, and an attention entry counts only when both its query and its key are
real tokens. Means are over valid entries (valid tokens x hidden, or valid pairs x heads).

When teacher and student head counts differ the attention term compares head-averaged maps
(mean over heads of the masked maps): it keeps the per-position relation and needs no learned
head mapping (docs/METHOD.md, "Attention term").
"""

from __future__ import annotations

import torch


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


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, over_all: bool = False) -> torch.Tensor:
    """Sum of (s - t)^2 where the broadcast 0/1 `mask` is 1, divided by the number of such entries,
    or by every entry with `over_all` (the reference release's nn.MSELoss on zeroed entries)."""
    valid = mask.expand_as(student).bool()
    diff = torch.where(valid, student - teacher, torch.zeros((), dtype=student.dtype, device=student.device))
    return diff.pow(2).sum() / (valid.numel() if over_all else valid.sum().clamp_min(1))


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor, normalization: str = "masked") -> torch.Tensor:
    """MSE of (N, h, T, T) maps; head-averaged if h differs.

    masked: over valid (query, key) pairs. reference: padded keys zeroed, mean over all entries
    (hrkd_ds/distill/normalization.py)."""
    reference = normalization == "reference"
    if reference:
        keep = attention_mask.to(student.dtype)[:, None, None, :]  # (N, 1, 1, T): real keys
    else:
        keep = pair_mask(attention_mask, student.dtype)  # (N, 1, T, T)
    if student.shape[1] != teacher.shape[1]:
        student, teacher = head_average(student, keep), head_average(teacher, keep)
    return masked_mse(student, teacher, keep, over_all=reference)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor, normalization: str = "masked") -> torch.Tensor:
    """MSE of (N, T, H) states: over real tokens x hidden, or (reference) over every element."""
    if normalization == "reference":
        return (student - teacher).pow(2).mean()
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
