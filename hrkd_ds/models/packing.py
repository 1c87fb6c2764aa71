"""Padding-free encoder forward: every per-token op runs on the real tokens only.

An episode pads every row to its longest row, so a padded forward spends its projections, FFNs and
LayerNorms (almost all of a BERT layer's work) on padding: on the Amazon reviews at 128 tokens the
padded episode holds 1.33x the real tokens, on the MNLI pairs 2.3x. Here the rows are packed
into one (1, total, H) sequence; only attention, which must see each row on its own, scatters
queries, keys and values back to the padded (N, heads, T, d) layout for one fused SDPA call and
gathers its output again. The distillation losses read padded (N, T, ...) tensors, so the layers
they use are unpacked at the end, zeros at padding (the losses mask padding; they never read it).

Positions stay those of the padded layout (0..T-1 per row), and each row's token 0 is computed
even where it is padding (the pooler reads it, as in the padded forward), so outputs at real
tokens equal the padded forward's up to float rounding. The layout is used for every batch, with
padding or without: the modules then run in the same order on every rank, which ZeRO-3's
parameter prefetch checks across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PackedLayout:
    """Where the real tokens of an (N, T) attention mask sit in the flat N*T layout."""

    n: int
    t: int
    index: torch.Tensor  # (total,) flat positions of the computed tokens (real ones and token 0), row-major
    starts: torch.Tensor  # (N,) each row's token 0 in the packed sequence
    key_valid: torch.Tensor  # (N, 1, 1, T) bool, True at real keys
    pad_index: torch.Tensor  # (N*T - total,) flat positions of the others (padding): zeros in `unpack`
    _masks: dict = field(default_factory=dict)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> "PackedLayout":
        n, t = attention_mask.shape
        valid = attention_mask.bool()
        computed = valid.clone()
        computed[:, 0] = True
        index = computed.reshape(-1).nonzero().squeeze(1)
        per_row = computed.sum(1)
        starts = torch.cumsum(per_row, 0) - per_row
        pad_index = (~computed).reshape(-1).nonzero().squeeze(1)
        return cls(n=n, t=t, index=index, starts=starts, key_valid=valid.view(n, 1, 1, t), pad_index=pad_index)

    @property
    def total(self) -> int:
        return self.index.numel()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, ...) -> (1, total, ...)."""
        return x.reshape(self.n * self.t, *x.shape[2:]).index_select(0, self.index).unsqueeze(0)

    def positions(self, device) -> torch.Tensor:
        """(1, total) position ids: each token's column in the padded layout."""
        return (self.index % self.t).unsqueeze(0).to(device)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(1, total, ...) -> (N, T, ...), zeros at padding other than token 0 (differentiable in x).

        One write per element: real rows copied, padding rows zeroed, into an uninitialised buffer
        (zeros everywhere and then an out-of-place index_copy wrote it three times; this runs for
        q, k and v of every layer)."""
        flat = x.new_empty(self.n * self.t, *x.shape[2:])
        flat.index_fill_(0, self.pad_index, 0)
        flat.index_copy_(0, self.index, x[0])
        return flat.view(self.n, self.t, *x.shape[2:])

    def additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """(N, 1, 1, T): 0 at real keys, the dtype's min at padded ones (the eager mask's values)."""
        if dtype not in self._masks:
            zero = torch.zeros((), dtype=dtype, device=self.key_valid.device)
            self._masks[dtype] = torch.where(self.key_valid, zero, torch.finfo(dtype).min)
        return self._masks[dtype]

    def heads_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Attention's (1, heads, total, d) -> (N, heads, T, d), zeros at padding."""
        return self.unpack(x.transpose(1, 2)).transpose(1, 2)
