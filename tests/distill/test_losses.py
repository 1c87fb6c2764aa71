"""Loss terms: pinned values, fused-vs-loop parity, masking, layer map, soft CE."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))

from distill_inputs import graph_cfg, make_mask, make_outputs, student_tensors  # noqa: E402
from make_fixtures import CASES, compute  # noqa: E402

from hrkd_ds.distill import ReferenceDistillLoss, RelationalDistillLoss, resolve_layer_map  # noqa: E402
from hrkd_ds.distill.terms import attention_mse, soft_cross_entropy  # noqa: E402
from hrkd_ds.errors import UserError  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "expected_losses.json")


@pytest.mark.parametrize("name", sorted(CASES))
def test_pinned_values(name):
    expected = json.load(open(FIXTURE))["cases"][name]
    got = compute(CASES[name])
    for key, value in expected.items():
        assert torch.allclose(torch.tensor(got[key], dtype=torch.float64), torch.tensor(value, dtype=torch.float64), rtol=1e-6, atol=1e-7), key


def build_pair(K, B, T, Hs, Ht, Ls, Lt, hs, ht, dtype=torch.float32, seed=0, normalization="masked", **gkw):
    """Random domain-major inputs plus a fused and a loop loss sharing one set of parameters."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mask = make_mask(K, B, T, gen)
    so = make_outputs(mask, Ls, Hs, hs, 3, gen, K=K, requires_grad=True, dtype=dtype)
    to = make_outputs(mask, Lt, Ht, ht, 3, gen, dtype=dtype)
    fused = RelationalDistillLoss(Hs, Ht, Ls, Lt, K, graph_cfg(**gkw), normalization=normalization).to(dtype).eval()
    with torch.no_grad():  # O(1) prototypes so the graph is not in its flat, all-uniform regime
        for proj in fused.params.projections:
            proj.weight.normal_(0, Hs**-0.5)
    loop = ReferenceDistillLoss(Hs, Ht, Ls, Lt, K, graph_cfg(**gkw), params=fused.params, normalization=normalization).eval()
    return so, to, mask, fused, loop


def grads_of(loss, so, to, mask, K):
    params = [p for p in loss.params.parameters() if p.requires_grad]
    names = ["logits", "emb"] + [f"hid{i}" for i in range(len(so.hidden_states))] + [f"att{i}" for i in range(len(so.attentions))]
    names += [n for n, p in loss.params.named_parameters() if p.requires_grad]
    out = loss(so, to, mask, K)
    grads = torch.autograd.grad(out.total, student_tensors(so) + params, allow_unused=True)
    return out, dict(zip(names, grads))


SHAPES = [
    # K, B, T, Hs, Ht, Ls, Lt, hs, ht
    (2, 3, 9, 8, 12, 2, 4, 2, 2),
    (3, 2, 6, 8, 16, 2, 2, 2, 4),  # head counts differ -> head-averaged maps
    (4, 2, 7, 6, 10, 3, 6, 3, 3),
    (5, 2, 5, 4, 8, 1, 3, 2, 2),
    (6, 1, 5, 4, 4, 2, 4, 2, 1),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"K{s[0]}")
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("normalization", ["masked", "reference"])
def test_fused_matches_loop_float64(shape, detach, normalization):
    """Exact formula agreement: every value and every gradient, graph parameters included."""
    so, to, mask, fused, loop = build_pair(*shape, dtype=torch.float64, detach_prototypes=detach, normalization=normalization)
    (a, ga), (b, gb) = grads_of(fused, so, to, mask, shape[0]), grads_of(loop, so, to, mask, shape[0])
    assert torch.allclose(a.total, b.total, rtol=1e-12)
    for k in a.terms:
        assert torch.allclose(a.terms[k], b.terms[k], rtol=1e-10, atol=1e-14), k
    overall = max(g.abs().max() for g in gb.values() if g is not None)
    for k in gb:
        assert (ga[k] is None) == (gb[k] is None), k
        if gb[k] is not None:
            # a graph in its flat regime has ~1e-19 gradients: judge those against the loss's scale
            scale = gb[k].abs().max() if not k.startswith("graph.") else max(gb[k].abs().max(), 1e-3 * overall)
            assert (ga[k] - gb[k]).abs().max() <= 1e-9 * scale, k


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"K{s[0]}")
@pytest.mark.parametrize("normalization", ["masked", "reference"])
def test_fused_matches_loop_float32(shape, normalization):
    """float32: values and gradients to 1e-5 relative (normwise per tensor).

    The graph parameters' gradients come out of softmaxes over near-uniform domain weights
    (cancellation), so for them rounding noise is judged against the gradient scale of the
    whole loss; float64 above checks them exactly.
    """
    so, to, mask, fused, loop = build_pair(*shape, detach_prototypes=True, normalization=normalization)
    (a, ga), (b, gb) = grads_of(fused, so, to, mask, shape[0]), grads_of(loop, so, to, mask, shape[0])
    assert torch.allclose(a.total, b.total, rtol=1e-5)
    for k in a.terms:
        assert torch.allclose(a.terms[k], b.terms[k], rtol=1e-5, atol=1e-7), k
    overall = max(g.abs().max() for g in gb.values() if g is not None)
    for k, g in gb.items():
        err = (ga[k] - g).norm()
        if k.startswith("graph."):  # measured up to 0.9e-5 (masked) and 1.4e-5 (reference) at K=3
            assert err <= 3e-5 * max(g.norm(), overall), k
        else:
            assert err <= 1e-5 * g.norm(), (k, float(err / g.norm()))


def test_padding_changes_nothing():
    """Values at padded positions (tokens, hidden, scores) affect neither loss nor valid grads."""
    K, B, T = 3, 2, 7
    so, to, mask, fused, loop = build_pair(K, B, T, 6, 8, 2, 4, 2, 2, detach_prototypes=False)
    pad = mask == 0
    assert pad.any()

    def perturbed(out, gen):
        def bump(x):
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * 5
            if x.dim() == 3:  # (N, T, H): padded tokens
                keep = pad[:, :, None]
            else:  # (N, h, T, T): padded query rows and padded key columns
                keep = pad[:, None, :, None] | pad[:, None, None, :]
            return (x.detach() + noise * keep).requires_grad_(x.requires_grad)
        return type(out)(out.logits, out.all_logits, bump(out.embeddings), tuple(map(bump, out.hidden_states)), tuple(map(bump, out.attentions)))

    gen = torch.Generator().manual_seed(7)
    so2, to2 = perturbed(so, gen), perturbed(to, gen)
    for loss in (fused, loop):
        a, ga = grads_of(loss, so, to, mask, K)
        b, gb = grads_of(loss, so2, to2, mask, K)
        assert torch.allclose(a.total, b.total, rtol=1e-6)
        for k in ("emb", "hid0", "hid1", "att0", "att1"):
            valid = ~pad[:, :, None] if k.startswith(("emb", "hid")) else (~pad[:, None, :, None] & ~pad[:, None, None, :])
            assert torch.allclose(ga[k] * valid, gb[k] * valid, rtol=1e-5, atol=1e-8), k
            assert (ga[k] * ~valid).abs().max() == 0 and (gb[k] * ~valid).abs().max() == 0, k


def test_attention_mask_not_values():
    """A -10000 style mask (not finfo.min) gives the same loss: masking is by the real mask."""
    gen = torch.Generator().manual_seed(3)
    mask = make_mask(2, 2, 6, gen)
    s, t = torch.randn(4, 2, 6, 6, generator=gen), torch.randn(4, 2, 6, 6, generator=gen)
    keys = (1 - mask[:, None, None, :].float())
    a = attention_mse(s + keys * torch.finfo(torch.float32).min, t + keys * torch.finfo(torch.float32).min, mask)
    b = attention_mse(s - keys * 10000, t - keys * 3, mask)
    assert torch.isfinite(a) and torch.allclose(a, b)


def test_layer_map():
    assert resolve_layer_map(4, 12) == [3, 6, 9, 12]
    assert resolve_layer_map(2, 2) == [1, 2]
    assert resolve_layer_map(2, 5, [2, 5]) == [2, 5]
    with pytest.raises(UserError, match="distill.layer_map"):
        resolve_layer_map(4, 6)
    with pytest.raises(UserError, match="distill.layer_map"):
        resolve_layer_map(2, 6, [1, 7])
    with pytest.raises(UserError, match="distill.layer_map"):
        resolve_layer_map(2, 6, [1])


def test_soft_cross_entropy_is_tinybert_mean_over_batch_and_classes():
    gen = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    manual = sum(-(torch.softmax(zt[i] / 2, -1)[c]) * torch.log_softmax(zs[i] / 2, -1)[c] for i in range(4) for c in range(3)) / 12
    assert torch.allclose(soft_cross_entropy(zs, zt, 2.0), manual)


def test_hand_computed_single_domain():
    """K=1, no graph: total = emb + att + hid + pred computed by hand with loops."""
    so, to, mask, fused, _ = build_pair(1, 2, 4, 3, 3, 1, 1, 1, 1, dtype=torch.float64, enabled=False)
    W, b = fused.params.projections[0].weight, fused.params.projections[0].bias
    W1, b1 = fused.params.projections[1].weight, fused.params.projections[1].bias
    emb = hid = att = 0.0
    n_tok = n_pair = 0
    for i in range(2):
        for q in range(4):
            if not mask[i, q]:
                continue
            n_tok += 1
            emb += ((W @ so.embeddings[i, q] + b - to.embeddings[i, q]) ** 2).sum()
            hid += ((W1 @ so.hidden_states[0][i, q] + b1 - to.hidden_states[0][i, q]) ** 2).sum()
            for k in range(4):
                if mask[i, k]:
                    n_pair += 1
                    att += (so.attentions[0][i, 0, q, k] - to.attentions[0][i, 0, q, k]) ** 2
    pred = soft_cross_entropy(so.logits, to.logits)
    expected = emb / (3 * n_tok) + hid / (3 * n_tok) + att / n_pair + pred
    assert torch.allclose(fused(so, to, mask, 1).total, expected, rtol=1e-10)


def test_hand_computed_reference_normalization():
    """K=1, no graph, distill.normalization=reference, written as the release writes it:
    nn.MSELoss over all elements, attention scores <= -100 (the padded keys) zeroed first."""
    so, to, mask, fused, loop = build_pair(1, 3, 5, 3, 4, 1, 1, 2, 2, dtype=torch.float64, enabled=False, normalization="reference")
    assert (mask == 0).any()
    mse = torch.nn.MSELoss()
    p0, p1 = fused.params.projections
    zero = lambda a: torch.where(a <= -1e2, torch.zeros_like(a), a)  # noqa: E731
    expected = (mse(to.embeddings, p0(so.embeddings)) + mse(to.hidden_states[0], p1(so.hidden_states[0]))
                + mse(zero(to.attentions[0]), zero(so.attentions[0])) + soft_cross_entropy(so.logits, to.logits))
    for loss in (fused, loop):
        assert torch.allclose(loss(so, to, mask, 1).total, expected, rtol=1e-12)
    # padded query rows and padded tokens count: the masked form gives a different number
    masked = RelationalDistillLoss(3, 4, 1, 1, 1, graph_cfg(enabled=False), params=fused.params)
    assert not torch.allclose(masked(so, to, mask, 1).total, expected)


def test_general_skip_cls_leaves_position_0_out_of_the_hidden_terms_only():
    """distill.general_skip_cls: fused = loop; position 0's states move no embedding/hidden term and
    get no gradient from them; the attention term is unchanged; the task stages never skip."""
    from hrkd_ds.config import DistillConfig

    K, B, T, Hs, Ht, Ls, Lt, hs, ht = 3, 2, 7, 8, 12, 2, 4, 2, 2
    so, to, mask, fused, loop = build_pair(K, B, T, Hs, Ht, Ls, Lt, hs, ht, dtype=torch.float64, enabled=False)
    base = fused(so, to, mask, K)
    fused.skip_cls = loop.skip_cls = True
    (a, ga), (b, gb) = grads_of(fused, so, to, mask, K), grads_of(loop, so, to, mask, K)
    assert torch.allclose(a.total, b.total, rtol=1e-12)
    for k in ("emb", "hid", "att"):
        assert torch.allclose(a.terms[k], b.terms[k], rtol=1e-10), k
    for k in ga:
        assert torch.allclose(ga[k], gb[k], rtol=1e-10, atol=1e-14), k
    assert torch.equal(a.terms["att"], base.terms["att"]) and not torch.allclose(a.terms["hid"], base.terms["hid"])
    for k in ["emb"] + [f"hid{i}" for i in range(Ls)]:
        assert ga[k][:, 0].abs().max() == 0 and ga[k][:, 1:].abs().max() > 0, k
    # by hand: layer 1's MSE over real tokens after position 0, per domain
    proj = fused.params.projections[1]
    diff = (proj(so.hidden_states[0]) - to.hidden_states[fused.layer_map[0] - 1]).pow(2).sum(-1)  # (N, T)
    keep = mask.clone().double()
    keep[:, 0] = 0
    want = (diff * keep).view(K, -1).sum(1) / (keep.view(K, -1).sum(1) * Ht)
    assert torch.allclose(a.terms["hid"][0], want, rtol=1e-12)
    # from_config: on for the task-agnostic (no prediction) loss only
    cfg = DistillConfig(general_skip_cls=True)

    class M:  # the two attributes from_config reads of an encoder
        def __init__(self, h, n):
            self.hidden_size, self.num_layers = h, n

    assert RelationalDistillLoss.from_config(M(Hs, Ls), M(Ht, Lt), K, graph_cfg(enabled=False), cfg, prediction=False).skip_cls
    assert not RelationalDistillLoss.from_config(M(Hs, Ls), M(Ht, Lt), K, graph_cfg(enabled=False), cfg).skip_cls


@pytest.mark.parametrize("method, skips", [("general", True), ("kd", False), ("hrkd", False)])
def test_general_skip_cls_reaches_the_general_stage_loss_only(method, skips):
    """build_step_module, as the stages call it: the switch acts in the general stage alone."""
    from hrkd_ds.config import DistillConfig, ModelConfig
    from hrkd_ds.distill.methods import build_step_module
    from hrkd_ds.models.build import build_model

    def tiny(h, n):
        return build_model(ModelConfig(hidden_size=h, num_layers=n, num_heads=2, intermediate_size=2 * h),
                           num_domains=2, num_labels=2, vocab_size=50, pad_id=0, max_seq_len=16)

    module = build_step_module(method, tiny(8, 1), tiny(16, 2), 2, graph_cfg(), DistillConfig(general_skip_cls=True))
    assert module.loss.skip_cls is skips
