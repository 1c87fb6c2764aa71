"""Dropout whose mask costs one 64-bit random draw per four elements on CPU.

PyTorch's CPU dropout draws one random number per element through a serial generator: on a
2-core machine the student's (40, 12, 128, 128) attention-probability dropout took about 80 ms a
layer, a quarter of the student's step. Here one draw of 64 random bits gives the keep/drop
decision of four elements (16 bits each, compared against a threshold), then the mask is applied
in one pass. Keep probability is 1 - round(p * 2**16) / 2**16 (within 2**-17 of 1 - p), and the
kept values are scaled by its exact inverse, so the output's expectation is the input's, as with
`F.dropout`. The draws come from torch's global CPU generator: seeded by `torch.manual_seed`,
saved and restored with it by the checkpoints.

On CUDA (and under p = 0 or eval) this is `F.dropout`: the fused Philox kernel is already cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 16
_LEVELS = 1 << _BITS


def _threshold(p: float) -> tuple[int, float]:
    """(int16 threshold: keep where bits >= it, scale = 1 / keep probability)."""
    drop = round(p * _LEVELS)
    return -(_LEVELS // 2) + drop, _LEVELS / (_LEVELS - drop)


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool mask, True with probability ~1 - p, from 16 random bits per element."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # full 64-bit range
    lo, _ = _threshold(p)
    return bits.view(torch.int16)[:n].view(shape) >= lo


class _MaskedScale(torch.autograd.Function):
    """y = x * mask * scale, with the mask kept (1 byte per element) for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.where(mask, x, 0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad, 0).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the 16-bit mask on CPU."""
    if not training or not 0.0 < p < 1.0 or x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, training)
    _, scale = _threshold(p)
    return _MaskedScale.apply(x, keep_mask(x.shape, p), scale)


class Dropout(nn.Dropout):
    """`nn.Dropout` through `dropout` above; same parameters (none) and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every plain `nn.Dropout` submodule for `Dropout` in place; returns how many."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace))
                swapped += 1
    return swapped
