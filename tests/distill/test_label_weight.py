"""distill.label_weight: the distillation module adds weight x mean over domains of the labels'
cross-entropy to the relational loss, logs it as `ce`, and adds nothing at 0 (the paper's loss)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrkd_ds.config import Config
from hrkd_ds.config.validate import validate
from hrkd_ds.distill.methods import DistillModule
from hrkd_ds.errors import UserError

K, B, C = 3, 2, 2


class FixedStudent(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, **_):
        return SimpleNamespace(logits=self.logits)


class FixedLoss(nn.Module):
    def forward(self, out, teacher_out, mask, num_domains):
        return SimpleNamespace(total=out.logits.sum() * 0 + 0.5, terms={"pred": torch.zeros(num_domains)})


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_label_term(weight):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(K * B, C, generator=gen)
    labels = torch.randint(0, C, (K * B,), generator=gen)
    batch = {"input_ids": torch.zeros(K * B, 4, dtype=torch.long), "attention_mask": torch.ones(K * B, 4, dtype=torch.long),
             "labels": labels, "domain_ids": torch.arange(K).repeat_interleave(B)}
    out = DistillModule(FixedStudent(logits), FixedLoss(), K, label_weight=weight)(batch, teacher_out=None)
    ce = F.cross_entropy(logits, labels, reduction="none").view(K, B).mean(1)
    assert out.loss.item() == pytest.approx(0.5 + weight * ce.mean().item(), rel=1e-6)
    assert ("ce" in out.logs) == (weight > 0)
    if weight:
        assert torch.allclose(out.logs["ce"], ce)


def test_negative_label_weight_is_refused():
    cfg = Config()
    cfg.distill.label_weight = -1.0
    with pytest.raises(UserError, match="distill.label_weight"):
        validate(cfg)
