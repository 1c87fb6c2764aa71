"""Padding-free forward: the same outputs, loss and gradients as the padded forward."""

from __future__ import annotations

import pytest
import torch

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig
from hrkd_ds.distill import RelationalDistillLoss
from hrkd_ds.models import build_model
from hrkd_ds.models.packing import PackedLayout

K, C, V, T = 3, 2, 50, 12


def small(hidden, layers, heads, dropout=0.0):
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=2 * hidden, dropout=dropout)


def batch(n=6, seed=0, pairs=True):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, T), generator=gen)
    lens = torch.randint(3, T, (n,), generator=gen)
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    types = (torch.arange(T)[None] >= (lens[:, None] // 2)).long() * mask if pairs else torch.zeros_like(ids)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types,
            "domain_ids": torch.arange(K).repeat_interleave(n // K)}


def outputs(model, b, padding_free):
    model.padding_free = padding_free
    return model(**b, output_internals=True)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("attention", ["probs", "scores"])
def test_packed_forward_equals_padded_at_real_tokens(attention, device):
    torch.manual_seed(0)
    model = build_model(small(32, 4, 4), K, C, V, 0, T, attention=attention).eval().double().to(device)
    model.select_internals([1, 2, 3, 4], [2, 4])
    b = {k: v.to(device) for k, v in batch().items()}
    packed, padded = outputs(model, b, True), outputs(model, b, False)
    tok = b["attention_mask"][:, :, None].double()
    pair = (b["attention_mask"][:, None, :, None] * b["attention_mask"][:, None, None, :]).double()
    torch.testing.assert_close(packed.all_logits, padded.all_logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(packed.logits, padded.logits, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(packed.embeddings, padded.embeddings * tok, rtol=1e-10, atol=1e-12)
    for a, p in zip(packed.hidden_states, padded.hidden_states):
        torch.testing.assert_close(a, p * tok, rtol=1e-10, atol=1e-12)
    for i, (a, p) in enumerate(zip(packed.attentions, padded.attentions)):
        assert (a is None) == (p is None) == (i not in (1, 3))
        if a is not None:
            assert a.shape == p.shape == (6, 4, T, T)
            torch.testing.assert_close(a * pair, p * pair, rtol=1e-10, atol=1e-12)
    assert (packed.embeddings * (1 - tok)).abs().sum() == 0  # zeros at padding, which the losses mask


def test_packed_student_and_teacher_give_the_padded_loss_and_gradients():
    torch.manual_seed(0)
    teacher = build_model(small(32, 6, 4), K, C, V, 0, T, attention="probs").eval().double()
    student = build_model(small(16, 3, 4), K, C, V, 0, T, attention="probs").double()
    loss = RelationalDistillLoss.from_config(student, teacher, K, GraphConfig(dropout=0.0), DistillConfig()).double().eval()
    loss.request_internals(student, teacher)
    assert student.padding_free and teacher.padding_free
    b = batch(seed=3)
    runs = []
    for free in (True, False):
        student.zero_grad()
        with torch.no_grad():
            t_out = outputs(teacher, b, free)
        out = loss(outputs(student, b, free), t_out, b["attention_mask"], K)
        out.total.backward()
        runs.append((out, {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}))
    (packed, g_packed), (padded, g_padded) = runs
    for k in ("emb", "hid", "att", "pred", "weights"):
        torch.testing.assert_close(packed.terms[k], padded.terms[k], rtol=1e-9, atol=1e-12)
    assert g_packed.keys() == g_padded.keys() and g_packed
    for n in g_packed:
        torch.testing.assert_close(g_packed[n], g_padded[n], rtol=1e-8, atol=1e-12)


def test_training_with_dropout_backpropagates_through_the_packed_path():
    torch.manual_seed(0)
    model = build_model(small(16, 2, 4, dropout=0.1), K, C, V, 0, T, attention="probs").train()
    model.select_internals([1, 2], [1, 2])
    out = outputs(model, batch(), True)
    (out.logits.sum() + out.hidden_states[1].sum() + out.attentions[0].sum()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("switch", [{"normalization": "reference"}, {"mask_padding": False}])
def test_losses_that_read_padding_switch_packing_off(switch):
    torch.manual_seed(0)
    teacher = build_model(small(32, 4, 4), K, C, V, 0, T).eval()
    student = build_model(small(16, 2, 4), K, C, V, 0, T)
    graph = GraphConfig(mask_padding=switch.get("mask_padding", True))
    distill = DistillConfig(normalization=switch.get("normalization", "masked"))
    RelationalDistillLoss.from_config(student, teacher, K, graph, distill).request_internals(student, teacher)
    assert not student.padding_free and not teacher.padding_free


def test_layout_packs_and_unpacks_the_real_tokens():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    layout = PackedLayout.from_mask(mask)
    x = torch.arange(12.0).view(3, 4, 1)
    packed = layout.pack(x)
    assert packed.flatten().tolist() == [0, 1, 2, 4, 8, 9, 10, 11]
    assert layout.starts.tolist() == [0, 3, 4] and layout.positions("cpu").tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]
    assert layout.unpack(packed).squeeze(-1).tolist() == [[0, 1, 2, 0], [4, 0, 0, 0], [8, 9, 10, 11]]
    left = PackedLayout.from_mask(torch.tensor([[0, 1, 1], [1, 1, 0]]))
    assert left.index.tolist() == [0, 1, 2, 3, 4]  # token 0 is computed even as padding: the pooler reads it
    assert left.key_valid.flatten().tolist() == [False, True, True, True, True, False]


@pytest.mark.parametrize("kind", ["no padding", "left padding"])
def test_batches_without_right_padding_give_the_padded_logits(kind):
    """The packed path runs for every batch (same module order on every ZeRO-3 rank)."""
    torch.manual_seed(0)
    model = build_model(small(32, 2, 4), K, C, V, 0, T).eval().double()
    b = batch()
    if kind == "no padding":
        b["attention_mask"] = torch.ones_like(b["attention_mask"])
    else:
        b["attention_mask"] = b["attention_mask"].flip(1)
        b["input_ids"] = b["input_ids"].flip(1)
    packed, padded = outputs(model, b, True), outputs(model, b, False)
    torch.testing.assert_close(packed.all_logits, padded.all_logits, rtol=1e-10, atol=1e-12)
    tok = b["attention_mask"][:, :, None].double()
    torch.testing.assert_close(packed.hidden_states[-1] * tok, padded.hidden_states[-1] * tok, rtol=1e-10, atol=1e-12)
