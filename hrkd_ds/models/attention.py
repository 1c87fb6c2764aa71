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

Only the layers whose maps a loss reads pay for them: the `hrkd_maps` keyword is a dict keyed by
the 0-based layer indices wanted, and each of those layers stores its map there. Every other
layer (and every call without `hrkd_maps`: prediction, evaluation) runs PyTorch's fused
scaled_dot_product_attention, which never materialises the (N, heads, T, T) map.

With `hrkd_packing` (a PackedLayout, hrkd_ds/models/packing.py) the rows arrive packed as one
(1, heads, total, d) sequence; attention pads them to (N, heads, T, d), so maps keep the padded
shape the losses read, and packs its output again.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from hrkd_ds.models.dropout import dropout as map_dropout

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
    hrkd_maps: dict[int, torch.Tensor | None] | None = None,
    hrkd_packing=None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(output (N,T,heads,d), scores or probs (N,heads,T,T)); fused SDPA and no map where none is wanted."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if hrkd_packing is not None:
        layout = hrkd_packing
        query, key, value = (layout.heads_padded(x) for x in (query, key, value))
        attention_mask = layout.additive_mask(query.dtype)  # (N, 1, 1, T)
        output, maps = hrkd_eager_attention(module, query, key, value, attention_mask, scaling, dropout,
                                            hrkd_attention, hrkd_maps, **kwargs)
        return layout.pack(output), maps  # (N, T, heads, d) -> (1, total, heads, d), as HF expects
    if hrkd_maps is None or module.layer_idx not in hrkd_maps:
        output = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0, scale=scaling)
        return output.transpose(1, 2).contiguous(), None
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    dropped = map_dropout(probs, dropout, module.training)
    output = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    hrkd_maps[module.layer_idx] = scores if hrkd_attention == "scores" else probs
    return output, hrkd_maps[module.layer_idx]


def register_attention() -> str:
    """Register `hrkd_eager` with transformers once (idempotent); returns its name."""
    global _registered
    if not _registered:
        AttentionInterface.register(ATTN_IMPLEMENTATION, hrkd_eager_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
        _registered = True
    return ATTN_IMPLEMENTATION
