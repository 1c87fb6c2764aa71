"""Domain graph: weights are distributions, switches do what they say, compile works."""

from __future__ import annotations

import pytest
import torch

from distill_inputs import graph_cfg, make_mask, make_outputs  # noqa: E402
from hrkd_ds.distill import DomainGraph, RelationalDistillLoss
from hrkd_ds.distill.terms import token_mask


def setup(K=4, seed=0, **gkw):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mask = make_mask(K, 2, 6, gen)
    so = make_outputs(mask, 2, 6, 2, 3, gen, K=K, requires_grad=True)
    to = make_outputs(mask, 4, 8, 2, 3, gen)
    loss = RelationalDistillLoss(6, 8, 2, 4, K, graph_cfg(**gkw)).eval()
    with torch.no_grad():  # O(1) prototypes: at 0.02 init the GAT sits in its flat (uniform) regime
        for proj in loss.params.projections:
            proj.weight.normal_(0, 6**-0.5)
    return so, to, mask, loss


def test_weights_sum_to_one_and_ratios_shape():
    so, to, mask, loss = setup(K=5, dropout=0.1)
    loss.train()  # dropout on: still distributions
    out = loss(so, to, mask, 5)
    assert out.weights.shape == (3, 5) and torch.allclose(out.weights.sum(1), torch.ones(3))
    assert out.ratios.shape == (2, 5, 3)
    assert torch.allclose(out.ratios.sum(-1), torch.ones(2, 5))
    assert (out.ratios[0, :, 2] == 0).all()  # level 1 aggregates levels 0..1 only


def test_disabled_graph_is_uniform():
    so, to, mask, loss = setup(enabled=False)
    out = loss(so, to, mask, 4)
    assert loss.params.graph is None
    assert torch.allclose(out.weights, torch.full((3, 4), 0.25))


def test_not_hierarchical_has_no_ratios_and_keeps_prototypes():
    torch.manual_seed(0)
    protos = torch.randn(3, 4, 8) * 3
    hier, flat = DomainGraph(4, 3, 8, graph_cfg()), DomainGraph(4, 3, 8, graph_cfg(hierarchical=False))
    flat.load_state_dict(hier.state_dict())
    (agg_h, r_h), (agg_f, r_f) = hier.compare_aggregate(protos), flat.compare_aggregate(protos)
    assert (r_f == 0).all() and torch.equal(agg_f, protos) and (r_h != 0).any()
    assert not torch.allclose(agg_h[1:], protos[1:]) and torch.equal(agg_h[0], protos[0])


def _weights_graph(loss, so, mask, K):
    s_hid = [so.embeddings, *so.hidden_states]
    return loss._domain_weights(s_hid, token_mask(mask, torch.float32), K)[0]


def test_detach_prototypes_stops_student_gradient():
    so, _, mask, detached = setup(detach_prototypes=True)
    w = _weights_graph(detached, so, mask, 4)
    assert torch.autograd.grad(w[1, 0], [so.embeddings, *so.hidden_states], allow_unused=True) == (None,) * 3
    so, _, mask, live = setup(detach_prototypes=False)
    grads = torch.autograd.grad(_weights_graph(live, so, mask, 4)[2, 0], [so.hidden_states[1]])
    assert grads[0].abs().sum() > 0


def test_trainable_off_freezes_graph_only():
    _, _, _, loss = setup(trainable=False)
    assert all(not p.requires_grad for p in loss.params.graph.parameters())
    assert all(p.requires_grad for p in loss.params.projections.parameters())


def test_mask_padding_switch_changes_prototypes():
    so, _, mask, masked = setup(mask_padding=True)
    _, _, _, unmasked = setup(mask_padding=False)
    unmasked.params.load_state_dict(masked.params.state_dict())
    s_hid = [so.embeddings, *so.hidden_states]
    tok = token_mask(mask, torch.float32)
    a, b = masked.prototypes(s_hid, tok, 4), unmasked.prototypes(s_hid, tok, 4)
    assert not torch.allclose(a, b)
    # masked prototypes ignore padded values
    bumped = [h.detach() + 9.0 * (mask == 0)[:, :, None] for h in s_hid]
    assert torch.allclose(masked.prototypes(bumped, tok, 4), a.detach(), atol=1e-6)


@pytest.mark.parametrize("attention", ["gat", "gatv2"])
@pytest.mark.parametrize("residual", [False, True])
def test_graph_batched_equals_loop(residual, attention):
    torch.manual_seed(0)
    g = DomainGraph(5, 4, 16, graph_cfg(residual=residual, attention=attention)).double().eval()
    protos = torch.randn(4, 5, 16, dtype=torch.float64) * 3
    (w1, r1), (w2, r2) = g(protos), g.forward_loop(protos)
    assert torch.allclose(w1, w2, rtol=1e-12) and torch.allclose(r1, r2, rtol=1e-12)


@pytest.mark.parametrize("residual", [False, True])
def test_small_prototypes_pin_the_weights_at_uniform_unless_residual(residual):
    """The release's GAT on the complete graph: equal attention rows -> equal outputs -> 1/K and no
    gradient; the residual keeps each node's own projection, so the weights move and can learn."""
    torch.manual_seed(0)
    g = DomainGraph(4, 3, 16, graph_cfg(residual=residual, dropout=0.0)).double().train()
    protos = torch.randn(3, 4, 16, dtype=torch.float64) * 0.01  # the scale std-0.02 projections give
    w, _ = g(protos)
    (w * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    spread = (w - 0.25).abs().max().item()
    grad = max(p.grad.abs().max().item() for p in g.parameters())
    if residual:
        assert spread > 1e-6 and grad > 1e-6
    else:
        assert spread < 1e-12 and grad < 1e-12


@pytest.mark.parametrize("attention", ["gat", "gatv2"])
def test_torch_compile_fused_loss(attention):
    """The fused loss (custom autograd Function included) compiles to one graph and matches eager."""
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile unavailable")
    so, to, mask, loss = setup(K=2, detach_prototypes=False, attention=attention)
    eager = loss(so, to, mask, 2)
    g_eager = torch.autograd.grad(eager.total, [so.embeddings, *so.attentions])
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    out = compiled(so, to, mask, 2)
    g_comp = torch.autograd.grad(out.total, [so.embeddings, *so.attentions])
    assert torch.allclose(out.total, eager.total, rtol=1e-6)
    for a, b in zip(g_comp, g_eager):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_torch_compile_inductor_fused_loss():
    """The real compiler (Inductor, C++ codegen on CPU) on a small shape: same values and gradients."""
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile unavailable")
    so, to, mask, loss = setup(K=2, detach_prototypes=False)
    eager = loss(so, to, mask, 2)
    g_eager = torch.autograd.grad(eager.total, [so.embeddings, *so.hidden_states, *so.attentions])
    compiled = torch.compile(loss, fullgraph=True, dynamic=False)
    out = compiled(so, to, mask, 2)
    g_comp = torch.autograd.grad(out.total, [so.embeddings, *so.hidden_states, *so.attentions])
    assert torch.allclose(out.total, eager.total, rtol=1e-5)
    for a, b in zip(g_comp, g_eager):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def _spread_and_grad(attention, protos):
    """(max |r - 1/K|, largest graph-parameter gradient) of a fresh graph on `protos`."""
    torch.manual_seed(0)
    G, K, D = protos.shape
    g = DomainGraph(K, G, D, graph_cfg(attention=attention)).double().train()
    w, _ = g(protos)
    (w * torch.arange(float(K), dtype=torch.float64)).sum().backward()
    return (w - 1.0 / K).abs().max().item(), max(p.grad.abs().max().item() for p in g.parameters())


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_gatv2_tells_distinct_domains_apart_at_initialisation(offset):
    """Distinct prototypes, small (the std-0.02 projections' scale) or sharing a large common part as
    real domains do: GATv2's weights leave 1/K and its parameters get a gradient. The release's GAT
    at the small scale: exactly 1/K and no gradient."""
    torch.manual_seed(1)
    protos = torch.randn(3, 4, 16, dtype=torch.float64) * 0.01 + offset * torch.randn(3, 1, 16, dtype=torch.float64)
    spread, grad = _spread_and_grad("gatv2", protos)
    assert spread > 1e-4 and grad > 1e-4, (spread, grad)  # standardised scores: the spread does not vanish with the scale
    if offset == 0.0:
        assert _spread_and_grad("gat", protos) == (0.0, pytest.approx(0.0, abs=1e-15))
    protos = torch.randn(3, 4, 16, dtype=torch.float64)  # O(1) prototypes: clearly non-uniform
    spread, grad = _spread_and_grad("gatv2", protos)
    assert spread > 1e-3 and grad > 1e-3, (spread, grad)


@pytest.mark.parametrize("residual", [False, True])
def test_gatv2_identical_prototypes_give_exactly_uniform_weights(residual):
    """K identical nodes are indistinguishable: every weight exactly 1/K (5 domains: 1/5 rounded)."""
    torch.manual_seed(0)
    g = DomainGraph(5, 3, 16, graph_cfg(attention="gatv2", hierarchical=False, residual=residual))
    protos = torch.randn(3, 1, 16).expand(3, 5, 16) * 3
    w, _ = g(protos)
    assert torch.equal(w, torch.full((3, 5), 1.0 / 5)), w
    assert torch.allclose(g.forward_loop(protos)[0], torch.full((3, 5), 1.0 / 5), rtol=0, atol=1e-6)  # the loop: BLAS rounding per row


def test_gat_keeps_the_release_parameters():
    """`gat` has the release's parameters (names, shapes, draws); gatv2 has its own."""
    torch.manual_seed(0)
    gat = DomainGraph(4, 3, 16, graph_cfg())
    torch.manual_seed(0)
    again = DomainGraph(4, 3, 16, graph_cfg(attention="gat"))
    assert {n for n, _ in gat.named_parameters()} == {"U", "V", "W1", "a1_src", "a1_dst", "W2", "a2_src", "a2_dst"}
    assert all(torch.equal(a, b) for a, b in zip(gat.parameters(), again.parameters()))
    v2 = DomainGraph(4, 3, 16, graph_cfg(attention="gatv2"))
    assert {n for n, _ in v2.named_parameters()} == {"U", "V", "W1", "W1_dst", "a1", "W2", "W2_src", "W2_dst", "a2"}


def _bound(fan_in, fan_out, gain):
    return gain * (6.0 / (fan_in + fan_out)) ** 0.5


def test_reference_init_bounds():
    """graph.init=reference: the release's Xavier bounds (gain 1.414; V's fans over (K, D, D));
    hidden_per_head=0 gives heads as wide as the prototypes (the release's nhid = hidden_size)."""
    K, G, D, H = 5, 3, 64, 2
    torch.manual_seed(0)
    g = DomainGraph(K, G, D, graph_cfg(init="reference", hidden_per_head=0, heads=H))
    assert g.hidden_per_head == D and g.W1.shape == (G, H, D, D) and g.W2.shape == (G, H * D, 1)
    expected = {"U": _bound(D, D, 1.414), "V": _bound(D * D, K * D, 1.414), "W1": _bound(D, D, 1.414),
                "a1_src": _bound(2 * D, 1, 1.414), "W2": _bound(H * D, 1, 1.414), "a2_src": _bound(2, 1, 1.414)}
    for name, bound in expected.items():
        w = getattr(g, name).detach()
        assert w.abs().max() <= bound, name
        if w.numel() >= 1000:  # uniform draws fill the interval
            assert w.abs().max() > 0.99 * bound and abs(w.std() / (bound / 3**0.5) - 1) < 0.05, name
    ours = DomainGraph(K, G, D, graph_cfg())
    assert ours.V.abs().max() > 4 * expected["V"]  # ours: per-(D, D) fans, gain 1 (x4.2 at D=64, x14 at 768)


@pytest.mark.parametrize("residual", [False, True])
def test_gatv2_fused_loss_matches_loop_float64(residual):
    """Under gatv2 the fused loss and the per-domain loop (reference_loss.py) agree in the total,
    the weights and every gradient, the graph's parameters included."""
    from test_losses import SHAPES, build_pair, grads_of  # noqa: E402

    shape = SHAPES[2]
    so, to, mask, fused, loop = build_pair(*shape, dtype=torch.float64, attention="gatv2", residual=residual)
    (a, ga), (b, gb) = grads_of(fused, so, to, mask, shape[0]), grads_of(loop, so, to, mask, shape[0])
    assert torch.allclose(a.total, b.total, rtol=1e-12) and torch.allclose(a.weights, b.weights, rtol=1e-12)
    assert (a.weights - 1.0 / shape[0]).abs().max() > 1e-4  # the graph is not at 1/K here
    graph = [k for k in gb if k.startswith("graph.")]
    assert "graph.W1_dst" in graph and max(gb[k].abs().max() for k in graph) > 1e-6
    for k in gb:
        assert ga[k] is not None and torch.allclose(ga[k], gb[k], rtol=1e-9, atol=1e-12), k
