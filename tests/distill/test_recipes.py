"""The recipes practitioners try first, as method rows (distill/methods.py): `logit-kd` (tau^2 KL +
the labels, no layer-wise terms) and `two-stage` (TinyBERT's task distillation: the layer-wise
terms, then the prediction layer). The KL term against torch's own KL and a hand computation; the
methods' term weights under the user's; the phase switch; both through the real trainer on 2
ranks (ZeRO-2 and ZeRO-3: a phase leaves parameters without gradients)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from distill_inputs import PAIR_DIMS, graph_cfg, loss_pair, student_tensors  # noqa: E402
from integration_helpers import assert_ok, free_port, loss_rows, run, torchrun_cmd, train_args  # noqa: E402

from hrkd_ds.config import DistillConfig, TermConfig, load_config  # noqa: E402
from hrkd_ds.distill import RelationalDistillLoss  # noqa: E402
from hrkd_ds.distill.loss_terms.kl import kl_rows  # noqa: E402
from hrkd_ds.distill.methods import LOGIT_KD_TERMS, METHODS, DistillModule, term_weights  # noqa: E402
from hrkd_ds.errors import UserError  # noqa: E402

K, B, T, Hs, Ht, Ls, Lt, C = PAIR_DIMS.values()
pair = loss_pair


def test_kl_is_tau_squared_kl_summed_over_classes_mean_over_rows():
    s = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 0.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    tau = 2.0
    by_hand = []
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zs = [math.exp(v / tau) for v in row_s]
        zt = [math.exp(v / tau) for v in row_t]
        ps, pt = [v / sum(zs) for v in zs], [v / sum(zt) for v in zt]
        by_hand.append(tau * tau * sum(q * math.log(q / p) for q, p in zip(pt, ps)))
    assert kl_rows(s, t, tau).tolist() == pytest.approx(by_hand, rel=1e-12)
    assert kl_rows(t, t, tau).abs().max().item() < 1e-12  # the student that matches the teacher pays nothing


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_logit_kd_fused_matches_loop_float64(tau):
    """Values and gradients of the logit-kd loss, fused against the loop (torch's own KL there)."""
    so, to, mask, labels, fused, loop = pair(LOGIT_KD_TERMS, temperature=tau)
    outs = [loss(so, to, mask, K, labels=labels) for loss in (fused, loop)]
    assert set(outs[0].terms) == {"kl", "ce", "weights", "ratios"}
    assert torch.allclose(outs[0].total, outs[1].total, rtol=1e-12)
    expected = 0.5 * kl_rows(so.logits, to.logits, tau).view(K, B).mean(1).mean() + 0.5 * outs[0].terms["ce"].mean()
    assert torch.allclose(outs[0].total, expected, rtol=1e-12)
    grads = [torch.autograd.grad(o.total, student_tensors(so), allow_unused=True) for o in outs]
    for ga, gb in zip(*grads):
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-14)
    assert "hidden" not in fused.reads and not fused.attention_loss  # nothing layer-wise is computed


class _Selects:
    def select_internals(self, hidden_layers, map_layers):
        self.hidden_layers, self.map_layers = tuple(hidden_layers), tuple(map_layers)


@pytest.mark.parametrize("terms, teacher_layers", [(LOGIT_KD_TERMS, ()), ({}, (1, 2))], ids=["logit-kd", "kd"])
def test_the_teacher_keeps_only_the_states_a_term_reads(terms, teacher_layers):
    """An online logit-kd teacher records no layer's hidden state; kd's records the mapped layers."""
    *_, fused, _ = pair(terms)
    student, teacher = _Selects(), _Selects()
    fused.layer_map = [1, 2]
    fused.request_internals(student, teacher)
    assert teacher.hidden_layers == teacher_layers and student.hidden_layers == (1, 2)


def test_method_term_weights_sit_under_the_users():
    assert term_weights(METHODS["logit-kd"], DistillConfig()) == LOGIT_KD_TERMS
    mine = DistillConfig(terms={"kl": TermConfig(0.9), "ce": TermConfig(0.1)})
    merged = term_weights(METHODS["logit-kd"], mine)
    assert merged["kl"].weight == 0.9 and merged["ce"].weight == 0.1 and merged["hid"] == 0.0
    assert term_weights(METHODS["kd"], mine) == mine.terms  # kd has no weights of its own


def test_two_stage_trains_the_layer_terms_then_the_prediction_layer():
    so, to, mask, labels, fused, loop = pair({}, two_stage=True)
    whole = RelationalDistillLoss(Hs, Ht, Ls, Lt, K, graph_cfg(enabled=False), params=fused.params).double().eval()
    everything = whole(so, to, mask, K, labels=labels)
    for loss in (fused, loop):
        loss.use_phase(0)
        first = loss(so, to, mask, K, labels=labels)
        loss.use_phase(1)
        second = loss(so, to, mask, K, labels=labels)
        assert set(first.terms) - {"weights", "ratios"} == {"emb", "att", "hid"}
        assert set(second.terms) - {"weights", "ratios"} == {"pred"}
        assert torch.allclose(second.total, everything.terms["pred"].mean(), rtol=1e-12)
        assert torch.allclose(first.total + second.total, everything.total, rtol=1e-12)  # the phases split the kd loss
    with pytest.raises(UserError, match="two-stage needs a layer-wise term"):
        pair({"emb": 0.0, "att": 0.0, "hid": 0.0}, two_stage=True)


class _Phases(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def use_phase(self, i):
        self.seen.append(i)


def test_the_switch_follows_the_share_of_the_stage_done():
    loss = _Phases()
    module = DistillModule(torch.nn.Identity(), loss, K, switch=0.25)
    import hrkd_ds.distill.methods as methods

    real, methods.distill_step = methods.distill_step, lambda *a: None
    try:
        for done in (0.0, 0.2, 0.25, 0.9):
            module({"input_ids": torch.zeros(1)}, progress=done)
    finally:
        methods.distill_step = real
    assert loss.seen == [0, 0, 1, 1]


def test_bad_split_is_one_line_naming_the_field():
    with pytest.raises(UserError, match=r"'distill.two_stage_split'.*in \(0, 1\)"):
        load_config(None, ["distill.two_stage_split=1.0"])


@pytest.mark.multiprocess
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_recipes_train_on_two_ranks(tmp_path, zero):
    """Both recipes through the trainer, 2 real ranks: logit-kd logs only kl and ce; two-stage logs the
    layer-wise terms for the first half of its steps and pred after, and the loss stays finite."""
    ds = str(Path(__file__).resolve().parents[2] / "ds_configs" / f"{zero}.json")
    teacher = tmp_path / "teacher"
    common = ["distill_train.max_steps=4", "distill_train.log_every=1", "distill_train.eval_every=4"]
    assert_ok(run(torchrun_cmd(2, free_port()) + train_args(teacher, tmp_path / "cache", "stages=[teacher]",
                                                             "teacher_train.max_steps=2", deepspeed=ds),
                  tmp_path / "teacher.log"), "teacher")
    for name in ("logit-kd", "two-stage"):
        out = tmp_path / name
        cmd = torchrun_cmd(2, free_port()) + train_args(out, tmp_path / "cache", "stages=[distill]", f"teacher_from={teacher}",
                                                         f"distill.method={name}", *common, deepspeed=ds)
        assert_ok(run(cmd, tmp_path / f"{name}.log"), name)
        rows = loss_rows(out, "student")
        assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
        logged = [set(r["terms"]) for r in rows]
        if name == "logit-kd":
            assert logged == [{"kl", "ce"}] * 4
        else:
            assert logged == [{"emb", "att", "hid"}] * 2 + [{"pred"}] * 2
