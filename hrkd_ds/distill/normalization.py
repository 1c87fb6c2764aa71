"""Which entries the layer-wise MSEs count, and what they divide by (`distill.normalization`).

- `masked` (ours): hidden/embedding MSEs over real tokens x hidden; attention MSE over (query, key)
  pairs that are both real, x heads. Padding never reaches the loss or its scale.
- `reference` (the 2021 release): hidden/embedding MSEs over every B*T*H element, padding
  included; attention MSE with padded keys zeroed (the release zeroes scores <= -100, which at
  its -10000 key mask are exactly the padded keys) and divided by every B*heads*T*T entry, so
  padded query rows count. Each term's scale then depends on the padded length
  (docs/METHOD.md, "Departures").

Both return masks of the same shapes, so the fused sums (and their CUDA kernels) see one layout.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from hrkd_ds.distill.terms import pair_mask, token_mask

NORMALIZATIONS = ("masked", "reference")


class LossMasks(NamedTuple):
    tokens: torch.Tensor  # (N, T, 1) 0/1: token positions the hidden/embedding MSEs count
    tokens_per_domain: torch.Tensor  # (K,) their count per domain (x hidden width gives the denominator)
    pairs: torch.Tensor  # (N, 1, T, T) 0/1: attention entries the attention MSE counts
    pairs_per_domain: torch.Tensor  # (K,) its denominator per domain, before x heads


def without_first_token(masks: LossMasks, num_domains: int) -> LossMasks:
    """The hidden/embedding masks with position 0 ([CLS]) left out, denominators recounted."""
    tokens = masks.tokens.clone()
    tokens[:, 0] = 0
    return masks._replace(tokens=tokens, tokens_per_domain=tokens.reshape(num_domains, -1).sum(1).clamp_min(1))


def key_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, T) -> (N, 1, T, T) float mask, 1 where the key is a real token (any query)."""
    N, T = attention_mask.shape
    return attention_mask.to(dtype)[:, None, None, :].expand(N, 1, T, T).contiguous()


def loss_masks(attention_mask: torch.Tensor, dtype: torch.dtype, num_domains: int, normalization: str = "masked") -> LossMasks:
    """Masks and per-domain denominators of the layer-wise MSEs for one domain-major episode."""
    K = num_domains
    N, T = attention_mask.shape
    if normalization == "masked":
        tokens, pairs = token_mask(attention_mask, dtype), pair_mask(attention_mask, dtype)
        return LossMasks(tokens, tokens.reshape(K, -1).sum(1).clamp_min(1), pairs, pairs.reshape(K, -1).sum(1).clamp_min(1))
    if normalization == "reference":
        rows = attention_mask.new_full((K,), N // K, dtype=dtype)
        tokens = torch.ones(N, T, 1, dtype=dtype, device=attention_mask.device)
        return LossMasks(tokens, rows * T, key_mask(attention_mask, dtype), rows * T * T)
    raise ValueError(f"distill.normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
