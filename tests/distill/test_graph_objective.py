"""graph.objective: `robust` changes what the graph learns, never the loss value or the student's gradient."""

from __future__ import annotations

import pytest
import torch

from distill_inputs import assert_compiles_like_eager, graph_cfg  # noqa: E402
from hrkd_ds.config import load_config
from hrkd_ds.distill import DomainGraph
from hrkd_ds.distill.graph_objective import weighted_layer_sum
from hrkd_ds.errors import UserError
from test_losses import SHAPES, build_pair, grads_of  # noqa: E402

ROBUST = dict(residual=True, objective="robust", robust_temperature=0.7)


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: f"K{s[0]}")
def test_robust_fused_matches_loop_float64(shape):
    """The loop reference writes the reversal and the entropy bonus on its own: values and every
    gradient, graph parameters included, agree with the fused loss."""
    so, to, mask, fused, loop = build_pair(*shape, dtype=torch.float64, **ROBUST)
    (a, ga), (b, gb) = grads_of(fused, so, to, mask, shape[0]), grads_of(loop, so, to, mask, shape[0])
    assert torch.allclose(a.total, b.total, rtol=1e-12)
    overall = max(g.abs().max() for g in gb.values())
    for k in gb:  # as test_losses: a flat graph's ~1e-18 gradients are judged against the loss's scale
        scale = gb[k].abs().max() if not k.startswith("graph.") else max(gb[k].abs().max(), 1e-3 * overall)
        assert ga[k] is not None and (ga[k] - gb[k]).abs().max() <= 1e-9 * scale, k


def test_robust_keeps_the_value_and_the_students_gradient_and_turns_the_graphs():
    """Same parameters under both objectives: one loss value, one student gradient, and a different
    gradient for the graph (its exact form: the next test)."""
    shape = SHAPES[2]
    so, to, mask, loss, _ = build_pair(*shape, dtype=torch.float64, **ROBUST)
    a, ga = grads_of(loss, so, to, mask, shape[0])
    loss.params.objective = "loss"  # the same parameters under the paper's objective
    b, gb = grads_of(loss, so, to, mask, shape[0])
    assert torch.equal(a.total, b.total)
    students = ["logits", "emb"] + [k for k in ga if k.startswith(("hid", "att"))] + [k for k in ga if k.startswith("projections.")]
    for k in students:
        assert torch.allclose(ga[k], gb[k], rtol=1e-12, atol=0), k
    graph = [k for k in ga if k.startswith("graph.")]
    assert graph and any((ga[k] - gb[k]).abs().max() > 1e-6 * gb[k].abs().max() for k in graph)


def test_robust_graph_gradient_ascends_the_regularised_sum():
    """What the graph receives under `robust` is exactly the gradient of
    -(sum r T + tau sum_g mean_d(T_g) H(r_g)): it ascends the weighted sum plus the entropy bonus."""
    torch.manual_seed(1)
    G, K, tau = 3, 4, 0.7
    graph = DomainGraph(K, G, 16, graph_cfg(residual=True, objective="robust")).double()
    protos, terms = torch.randn(G, K, 16, dtype=torch.float64), torch.rand(G, K, dtype=torch.float64) + 0.5
    params = list(graph.parameters())
    got = torch.autograd.grad(weighted_layer_sum(graph(protos)[0], terms, "robust", tau), params)
    w = graph(protos)[0]
    objective = (w * terms).sum() + tau * (terms.mean(dim=1) * -(w * w.log()).sum(dim=1)).sum()
    want = torch.autograd.grad(-objective, params)
    for g, e in zip(got, want):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-14)


def _train_graph(objective: str, terms: torch.Tensor, tau: float, steps: int = 300) -> torch.Tensor:
    """A residual graph over fixed prototypes trained on fixed layer terms; its final weights."""
    torch.manual_seed(0)
    G, K = terms.shape
    graph = DomainGraph(K, G, 16, graph_cfg(residual=True, objective=objective)).double().train()
    protos = torch.randn(G, K, 16, dtype=torch.float64)
    opt = torch.optim.Adam(graph.parameters(), lr=1e-2)  # a larger step can saturate a softmax, where both objectives stall
    for _ in range(steps):
        w, _ = graph(protos)
        opt.zero_grad()
        weighted_layer_sum(w, terms, objective, tau).backward()
        opt.step()
    return graph(protos)[0].detach()


def test_robust_graph_learns_the_soft_worst_domain_weights_where_loss_collapses():
    """With fixed terms the robust game's optimum is softmax(T / (tau mean T)) per level: the graph
    reaches it. The paper's objective instead collapses each level onto one domain (not always the
    smallest term's: once the softmax saturates its gradient vanishes, wherever it is)."""
    terms = torch.tensor([[1.0, 2.0, 1.5, 0.5], [3.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    tau = 0.5
    optimum = torch.softmax(terms / (tau * terms.mean(dim=1, keepdim=True)), dim=1)
    robust = _train_graph("robust", terms, tau)
    assert (robust - optimum).abs().max() < 0.02, (robust, optimum)
    collapsed = _train_graph("loss", terms, tau)
    assert (collapsed.max(dim=1).values > 0.99).all(), collapsed


@pytest.mark.parametrize("override,field", [("graph.residual=false", "graph.residual"),
                                            ("graph.trainable=false", "graph.trainable"),
                                            ("graph.detach_prototypes=false", "graph.detach_prototypes"),
                                            ("graph.robust_temperature=0", "graph.robust_temperature")])
def test_robust_refuses_settings_that_void_it(override, field):
    base = ["graph.objective=robust", "graph.residual=true"]
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        load_config(None, base + [override])
    load_config(None, base)  # and the valid combination loads


def test_robust_fused_loss_compiles_to_one_graph():
    """The reversal and the bonus are plain tensor ops: dynamo traces the loss whole (fullgraph),
    with the same value and the same gradients for the student and the graph."""
    shape = SHAPES[0]
    so, to, mask, loss, _ = build_pair(*shape, **ROBUST)
    assert_compiles_like_eager(loss, so, to, mask, shape[0])
