"""The CPU dropout with 16-bit masks: the keep rate, unbiased output, the gradient, seeding, the swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hrkd_ds.config import ModelConfig
from hrkd_ds.models import build_model
from hrkd_ds.models.dropout import Dropout, _MaskedScale, _threshold, dropout, keep_mask, use_fast_dropout


def test_keep_rate_is_one_minus_p_in_every_16_bit_lane():
    """Each 64-bit draw feeds four elements: all four lanes must be unbiased, not only the low ones."""
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([1 << 22]), 0.1).view(-1, 4).double()
    lanes = mask.mean(0)  # each lane: 2**20 draws, std of the rate ~3e-4
    assert torch.all((lanes - 0.9).abs() < 1.5e-3), lanes
    adjacent = torch.corrcoef(torch.stack([mask[:, 0], mask[:, 1]]))[0, 1]
    assert abs(adjacent) < 5e-3


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_output_is_unbiased_and_kept_values_are_scaled(p):
    torch.manual_seed(1)
    x = torch.rand(1 << 20, dtype=torch.float64) + 0.5
    y = dropout(x, p)
    kept = y != 0
    _, scale = _threshold(p)
    assert torch.equal(y[kept], x[kept] * scale)
    assert abs(1 - kept.double().mean().item() - p) < 3e-3
    assert abs(y.sum().item() / x.sum().item() - 1) < 1e-2


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    mask = keep_mask(x.shape, 0.3)
    assert torch.autograd.gradcheck(lambda t: _MaskedScale.apply(t, mask, 1.7), (x,))
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    _, scale = _threshold(0.3)
    assert torch.equal(x.grad, torch.where(y != 0, g * scale, 0))


def test_seeded_like_torch_and_identity_when_off():
    x = torch.randn(4, 1000)
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    c = dropout(x, 0.1)
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert dropout(x, 0.1, training=False) is x and torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_bf16_keeps_its_dtype():
    y = dropout(torch.ones(64, 64, dtype=torch.bfloat16), 0.1)
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) <= {0.0, float(torch.tensor(_threshold(0.1)[1], dtype=torch.bfloat16))}


def test_models_swap_every_plain_dropout_and_keep_their_state_dict():
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, dropout=0.1)
    model = build_model(cfg, 2, 2, 50, 0, 16, attention="probs")
    kinds = {type(m) for m in model.modules() if isinstance(m, nn.Dropout)}
    assert kinds == {Dropout}
    plain = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.2))
    keys = plain.state_dict().keys()
    assert use_fast_dropout(plain) == 1 and isinstance(plain[1], Dropout) and plain[1].p == 0.2
    assert plain.state_dict().keys() == keys


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensors_take_torchs_fused_dropout():
    x = torch.ones(1000, device="cuda")
    torch.cuda.manual_seed(0)
    a = dropout(x, 0.1)
    torch.cuda.manual_seed(0)
    assert torch.equal(a, nn.functional.dropout(x, 0.1))
