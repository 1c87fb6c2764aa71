"""A bf16 teacher (what DeepSpeed runs when the teacher JSON has bf16.enabled): loss in fp32, terms close."""

from __future__ import annotations

import copy

import torch

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig
from hrkd_ds.distill import RelationalDistillLoss
from hrkd_ds.models import build_model

K, C, V, T = 3, 2, 80, 16


def test_bf16_teacher_loss_is_fp32_and_close_to_the_fp32_teacher():
    torch.manual_seed(0)
    cfg = lambda h, layers: ModelConfig(hidden_size=h, num_layers=layers, num_heads=4, intermediate_size=2 * h, dropout=0.0)  # noqa: E731
    teacher = build_model(cfg(64, 4), K, C, V, 0, T).eval()
    student = build_model(cfg(32, 2), K, C, V, 0, T).eval()
    loss = RelationalDistillLoss.from_config(student, teacher, K, GraphConfig(dropout=0.0), DistillConfig()).eval()
    loss.request_internals(student, teacher)
    teacher_bf16 = copy.deepcopy(teacher).to(torch.bfloat16)
    teacher_bf16.select_internals(loss.layer_map, loss.layer_map)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (4 * K, T), generator=gen)
    mask = (torch.arange(T)[None] < torch.randint(4, T + 1, (4 * K, 1), generator=gen)).long()
    b = {"input_ids": ids * mask, "attention_mask": mask}
    s_out = student(**b, output_internals=True)
    with torch.no_grad():
        t32, t16 = teacher(**b, output_internals=True), teacher_bf16(**b, output_internals=True)
    assert t16.hidden_states[1].dtype == torch.bfloat16 and t16.attentions[1].dtype == torch.bfloat16
    a, b16 = loss(s_out, t32, mask, K), loss(s_out, t16, mask, K)
    assert b16.total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in b16.terms.values())
    for k in ("emb", "hid", "att", "pred"):
        rel = ((a.terms[k] - b16.terms[k]).abs() / a.terms[k].abs()).max().item()
        assert 0 < rel < 2e-2, (k, rel)  # bf16 has 8 mantissa bits: nonzero, but about 1e-3 relative
