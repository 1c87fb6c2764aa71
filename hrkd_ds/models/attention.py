"""Eager attention that can hand back pre-softmax scores (TinyBERT / HRKD distil the scores).

transformers 5 eager attention returns only the post-softmax probabilities. The reference
distils the pre-softmax scores, so we register our own attention function under
`ATTN_IMPLEMENTATION` in transformers' AttentionInterface (and the eager mask builder under the
same name in AttentionMaskInterface). Which map is returned is picked per call through the
`hrkd_attention` keyword that transformers forwards from `model(...)` down to the attention
function: "scores" (reference-compatible) or "probs" (the trainer's default,
`distill.attention`: bounded, so a teacher with sharp attention cannot swamp the other terms).

Scores include the additive padding mask (finite `finfo(dtype).min` at padded keys): the loss
masks those entries with the real attention mask, it never relies on their values.
"""

from __future__ import annotations

import torch
from torch import nn

ATTN_IMPLEMENTATION = "hrkd_eager"
ATTENTION_KINDS = ("scores", "probs")

_registered = False


def hrkd_eager_attention(
    module: nn.Module,
    query: torch.Tensor,  # (N, heads, T, d)
    key: torch.Tensor,  # (N, heads, T, d)
    value: torch.Tensor,  # (N, heads, T, d)
    attention_mask: torch.Tensor | None,  # (N, 1, T, T) additive, or None
    scaling: float | None = None,
    dropout: float = 0.0,
    hrkd_attention: str = "probs",
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention returning (output (N,T,heads,d), scores or probs (N,heads,T,T))."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return output, (scores if hrkd_attention == "scores" else probs)


def register_attention() -> str:
    """Register `hrkd_eager` with transformers once (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(ATTN_IMPLEMENTATION, hrkd_eager_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
        _registered = True
    return ATTN_IMPLEMENTATION
