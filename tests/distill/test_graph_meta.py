"""graph.objective=meta (distill/graph_meta.py): the alignment against an autograd reference in
float64, the loss's value and the student's gradient untouched, the graph descending -sum r A, the
refresh cadence saved with the module, the refusals, compile, and 2 real ranks under ZeRO-2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from distill_inputs import assert_compiles_like_eager  # noqa: E402
from integration_helpers import assert_ok, free_port, loss_rows, run, single_cmd, torchrun_cmd, train_args  # noqa: E402
from test_losses import SHAPES, build_pair, grads_of  # noqa: E402

from hrkd_ds.config import load_config  # noqa: E402
from hrkd_ds.distill import RelationalDistillLoss  # noqa: E402
from hrkd_ds.distill.graph_meta import layer_terms, measure_alignment, refresh_alignment, select_rows, split_rows  # noqa: E402
from hrkd_ds.distill.loss_terms.labels import per_domain_ce  # noqa: E402
from hrkd_ds.errors import UserError  # noqa: E402
from hrkd_ds.models.build import build_model  # noqa: E402

META = dict(attention="gatv2", objective="meta")
K, B, T, C = 3, 4, 7, 2


def tiny_models(held=1):
    """A real tiny teacher and student (float64, random BERT), their loss, an episode with labels."""
    torch.manual_seed(0)
    cfg = load_config(None, ["teacher.hidden_size=16", "teacher.num_layers=2", "teacher.num_heads=2",
                             "teacher.intermediate_size=32", "student.hidden_size=8", "student.num_layers=2",
                             "student.num_heads=2", "student.intermediate_size=16", *[f"graph.{k}={v}" for k, v in META.items()],
                             f"graph.meta_rows={held}", "distill_train.batch_per_domain=4"])
    teacher = build_model(cfg.teacher, K, C, 50, 0, T).double().eval()
    student = build_model(cfg.student, K, C, 50, 0, T).double().eval()
    loss = RelationalDistillLoss.from_config(student, teacher, K, cfg.graph, cfg.distill).double()
    loss.request_internals(student, teacher)
    gen = torch.Generator().manual_seed(3)
    lens = torch.randint(3, T + 1, (K * B,), generator=gen)
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    batch = {"input_ids": torch.randint(1, 50, (K * B, T), generator=gen) * mask, "attention_mask": mask,
             "token_type_ids": torch.zeros(K * B, T, dtype=torch.long),
             "domain_ids": torch.arange(K).repeat_interleave(B), "labels": torch.randint(0, C, (K * B,), generator=gen)}
    with torch.no_grad():
        t_out = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "domain_ids")},
                        output_internals=True)
    return student, loss, t_out, batch


def _inputs(b):
    return {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids", "domain_ids")}


def reference_alignment(student, loss, t_out, batch, held):
    """A_(g,d) = <grad CE(held rows), grad T_(g,d)(other rows)> by plain autograd, one (g, d) at a time."""
    other, held_rows = split_rows(K * B, K, held)
    params = [p for p in student.parameters() if p.requires_grad]
    h = {k: v[held_rows] for k, v in batch.items()}
    v = torch.autograd.grad(per_domain_ce(student(**_inputs(h)).logits, h["labels"], K).sum(), params, allow_unused=True)
    a = {k: x[other] for k, x in batch.items()}
    t_a = select_rows(t_out, other)
    s_a = student(**_inputs(a), output_internals=True)
    G = len(loss.params.projections)
    terms = None

    def grad_of(weights):  # the layer terms' gradient under fixed weights, per-domain terms included
        loss._domain_weights = lambda *_: (weights, torch.zeros(G - 1, K, G, dtype=torch.float64))
        out = loss(s_a, t_a, a["attention_mask"], K, labels=a["labels"])
        return torch.autograd.grad(out.total, params, retain_graph=True, allow_unused=True), out

    base, out = grad_of(torch.zeros(G, K, dtype=torch.float64))
    terms = layer_terms(loss, out.terms, G)
    A = torch.zeros(G, K, dtype=torch.float64)
    for g in range(G):
        for d in range(K):
            onehot = torch.zeros(G, K, dtype=torch.float64)
            onehot[g, d] = 1.0
            grads, _ = grad_of(onehot)
            A[g, d] = sum((vi * (gi - bi)).sum() for vi, gi, bi in zip(v, grads, base)
                          if vi is not None and gi is not None)
    del loss._domain_weights
    return A, terms


@pytest.mark.parametrize("held", [1, 2])
def test_alignment_matches_autograd_float64(held):
    """The central difference along the held-out gradient equals the autograd inner products of the
    held-out gradient with every level's and domain's layer-term gradient (float64, 1e-6 relative)."""
    student, loss, t_out, batch = tiny_models(held)
    got = measure_alignment(student, loss, t_out, batch, K, held, rel_step=1e-6).double()
    want, terms = reference_alignment(student, loss, t_out, batch, held)
    assert got.shape == want.shape == terms.shape == (3, K)
    assert want.abs().min() > 0  # every level and domain carries a signal here
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9 * want.abs().max()), (got, want)


def test_meta_keeps_the_value_and_the_students_gradient_and_the_graph_descends_minus_r_a():
    """Same parameters under `meta` and `loss`: one value, one student gradient; the graph's gradient
    is exactly that of -sum r A for the graph's stored alignment A."""
    shape = SHAPES[2]
    so, to, mask, loss, _ = build_pair(*shape, dtype=torch.float64, **META)
    graph = loss.params.graph
    graph.alignment.copy_(torch.randn(graph.alignment.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    a, ga = grads_of(loss, so, to, mask, shape[0])
    loss.params.objective = "loss"
    b, gb = grads_of(loss, so, to, mask, shape[0])
    assert torch.equal(a.total, b.total)
    for k in [k for k in ga if not k.startswith("graph.")]:
        assert torch.allclose(ga[k], gb[k], rtol=1e-12, atol=0), k
    names = [n for n, p in graph.named_parameters()]
    w = loss(so, to, mask, shape[0]).weights  # detached: recompute the graph's weights with their graph
    from hrkd_ds.distill.terms import token_mask
    s_hid = [so.embeddings, *so.hidden_states]
    w = loss._domain_weights(s_hid, token_mask(mask, torch.float64), shape[0])[0]
    want = torch.autograd.grad(-(w * graph.alignment).sum(), list(graph.parameters()))
    for n, e in zip(names, want):
        assert torch.allclose(ga[f"graph.{n}"], e, rtol=1e-10, atol=1e-14), n


def test_refresh_every_n_calls_and_the_state_travels_with_the_module():
    """meta_every=2: measured at calls 0 and 2 only; the counter and the alignment are in the
    state dict, so a resumed run measures at the same steps from the same alignment."""
    student, loss, t_out, batch = tiny_models()
    graph = loss.params.graph
    graph.meta_every = 2
    loss.train()
    seen = []
    for _ in range(3):
        before = graph.alignment.clone()
        refresh_alignment(student, loss, t_out, batch, K)
        seen.append(not torch.equal(before, graph.alignment))
        graph.alignment.zero_()
    assert seen == [True, False, True] and int(graph.meta_calls) == 3
    state = loss.state_dict()
    assert "params.graph.alignment" in state and int(state["params.graph.meta_calls"]) == 3
    loss.eval()
    refresh_alignment(student, loss, t_out, batch, K)
    assert int(graph.meta_calls) == 3  # evaluation never measures


@pytest.mark.parametrize("override,field", [("graph.attention=gat", "graph.attention"),
                                            ("graph.trainable=false", "graph.trainable"),
                                            ("graph.detach_prototypes=false", "graph.detach_prototypes"),
                                            ("distill.fused=false", "distill.fused"),
                                            ("graph.meta_rows=8", "graph.meta_rows"),
                                            ("graph.meta_every=0", "graph.meta_every"),
                                            ("graph.meta_step=0", "graph.meta_step")])
def test_meta_refuses_settings_that_void_it(override, field):
    base = ["graph.objective=meta", "graph.attention=gatv2", "distill_train.batch_per_domain=8"]
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        load_config(None, base + [override])
    load_config(None, base)
    load_config(None, base + ["graph.attention=gat", "graph.residual=true"])  # residual also lets the weights move


def test_meta_fused_loss_compiles_to_one_graph():
    """The surrogate is plain tensor ops: dynamo traces the loss whole, same value and gradients."""
    shape = SHAPES[0]
    so, to, mask, loss, _ = build_pair(*shape, **META)
    loss.params.graph.alignment.normal_()
    assert_compiles_like_eager(loss, so, to, mask, shape[0])


REPO = Path(__file__).resolve().parents[2]
META_ARGS = ["distill.method=hrkd", "graph.attention=gatv2", "graph.objective=meta", "graph.meta_rows=1"]


def test_meta_trains_on_two_ranks_under_zero2(tmp_path):
    """The trainer, 2 real ranks, ZeRO-2: finite losses every step and weights that leave 1/K."""
    ds = str(REPO / "ds_configs" / "zero2.json")
    teacher = tmp_path / "teacher"
    assert_ok(run(torchrun_cmd(2, free_port()) + train_args(teacher, tmp_path / "cache", "stages=[teacher]",
                                                             "teacher_train.max_steps=2", deepspeed=ds),
                  tmp_path / "teacher.log"), "teacher")
    out = tmp_path / "meta"
    cmd = torchrun_cmd(2, free_port()) + train_args(out, tmp_path / "cache", "stages=[distill]", f"teacher_from={teacher}",
                                                     *META_ARGS, "distill_train.max_steps=4", "distill_train.eval_every=4",
                                                     deepspeed=ds)
    assert_ok(run(cmd, tmp_path / "meta.log"), "meta")
    rows = loss_rows(out, "student")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] == r["loss"] and abs(r["loss"]) < 1e6 for r in rows)
    last = torch.tensor(rows[-1]["weights"])
    assert (last - 1.0 / last.shape[1]).abs().max() > 1e-6, last
    # the rows carry the held-out alignment the weights are trained on, one (G, K) entry per level and domain
    align = torch.tensor(rows[-1]["alignment"])
    assert align.shape == last.shape and align.abs().sum() > 0


def test_meta_under_zero3_is_one_line_naming_the_field(tmp_path):
    ds = str(REPO / "ds_configs" / "zero3.json")
    """Refused before anything trains (the checks run before the teacher stage), nothing written."""
    res = run(single_cmd() + train_args(tmp_path / "out", tmp_path / "cache", "stages=[teacher,distill]", *META_ARGS,
                                         deepspeed=ds), tmp_path / "z3.log")
    assert res.rc == 2, res.tail()
    assert "graph.objective" in res.log and "ZeRO-3" in res.log, res.tail()
    assert not (tmp_path / "out" / "teacher").exists()
