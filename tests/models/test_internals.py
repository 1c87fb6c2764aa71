"""Selected internals: the teacher computes only the mapped layers' maps and states, same loss."""

from __future__ import annotations

import copy

import pytest
import torch

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig, TermConfig
from hrkd_ds.distill import RelationalDistillLoss
from hrkd_ds.models import build_model

K, C, V, T = 3, 2, 50, 12


def small(hidden, layers, heads):
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=2 * hidden, dropout=0.0)


def batch(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, T), generator=gen)
    lens = torch.randint(3, T + 1, (n,), generator=gen)
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "domain_ids": torch.arange(K).repeat_interleave(n // K)}


def setup(attention_loss=True):
    torch.manual_seed(0)
    teacher = build_model(small(32, 6, 4), K, C, V, 0, T, attention="probs").eval()
    student = build_model(small(16, 3, 4), K, C, V, 0, T, attention="probs").eval()
    cfg = DistillConfig(terms={} if attention_loss else {"att": TermConfig(weight=0.0)})
    loss = RelationalDistillLoss.from_config(student, teacher, K, GraphConfig(dropout=0.0), cfg).eval()
    return teacher, student, loss


def run(teacher, student, loss, b):
    """Loss terms and the student's parameter gradients for one step."""
    student.zero_grad()
    with torch.no_grad():
        t_out = teacher(**b, output_internals=True)
    out = loss(student(**b, output_internals=True), t_out, b["attention_mask"], K)
    out.total.backward()
    return out, t_out, {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


def test_selected_teacher_layers_give_the_same_loss_and_gradients():
    teacher, student, loss = setup()
    b = batch()
    full, full_t, full_g = run(teacher, student, loss, b)  # every layer's map and state (eager everywhere)
    loss.request_internals(student, teacher)
    sel, sel_t, sel_g = run(teacher, student, loss, b)
    assert loss.layer_map == [2, 4, 6]
    assert [a is not None for a in sel_t.attentions] == [False, True, False, True, False, True]
    assert [h is not None for h in sel_t.hidden_states] == [False, True, False, True, False, True]
    assert all(a is not None for a in full_t.attentions)
    for k in ("emb", "hid", "att", "pred", "weights"):
        assert torch.allclose(full.terms[k], sel.terms[k], rtol=1e-5, atol=1e-7), k
    assert full_g.keys() == sel_g.keys() and full_g
    for n in full_g:
        assert torch.allclose(full_g[n], sel_g[n], rtol=1e-4, atol=1e-7), n


def test_attention_term_off_computes_no_maps_and_keeps_the_other_terms():
    teacher, student, loss = setup()
    b = batch(seed=1)
    on, _, _ = run(teacher, student, loss, b)
    teacher_off, student_off, loss_off = setup(attention_loss=False)
    loss_off.request_internals(student_off, teacher_off)
    off, t_out, _ = run(teacher_off, student_off, loss_off, b)
    s_out = student_off(**b, output_internals=True)
    assert all(a is None for a in t_out.attentions) and all(a is None for a in s_out.attentions)
    assert all(h is not None for h in s_out.hidden_states)
    assert "att" not in off.terms and torch.count_nonzero(on.terms["att"]) > 0  # weight 0: not computed, not logged
    for k in ("emb", "hid", "pred"):
        assert torch.allclose(on.terms[k], off.terms[k], rtol=1e-5, atol=1e-7), k
    weighted = (on.weights * torch.cat([on.terms["emb"][None], on.terms["hid"]])).sum() + on.terms["pred"].sum() / K
    assert off.total.item() == pytest.approx(weighted.item(), rel=1e-5)


def test_prediction_uses_fused_attention_with_the_same_logits():
    teacher, _, _ = setup()
    b = batch(seed=2)
    eager = copy.deepcopy(teacher)
    with torch.no_grad():
        fused = teacher(**b).all_logits  # no internals: every layer takes SDPA
        ref = eager(**b, output_internals=True).all_logits  # every layer eager, maps kept
    assert torch.allclose(fused, ref, atol=1e-5)


def test_layer_selection_is_checked():
    teacher, _, _ = setup()
    with pytest.raises(ValueError, match="outside"):
        teacher.select_internals([0, 7], [])
