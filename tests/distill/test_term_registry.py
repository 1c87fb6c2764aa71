"""The loss-term registry: weights from config scale each term, a term registered from its own module
is computed by both the fused loss and the loop reference and trains through the real trainer, and
bad term settings are one line naming the field."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from distill_inputs import graph_cfg, make_mask, make_outputs, student_tensors  # noqa: E402
from integration_helpers import assert_ok, child_env, loss_rows, run, train_args  # noqa: E402

from hrkd_ds.config import Config, check_resume_config, load_config, save_config  # noqa: E402
from hrkd_ds.distill import ReferenceDistillLoss, RelationalDistillLoss  # noqa: E402
from hrkd_ds.distill.term_registry import LossTerm, active_terms, register, registered, unregister  # noqa: E402
from hrkd_ds.errors import UserError  # noqa: E402

K, B, T, Hs, Ht, Ls, Lt, C = 3, 2, 6, 8, 12, 2, 4, 3


@pytest.fixture
def toy():
    import toy_term  # noqa: F401  registers "toy" (idempotent on re-import)

    register(toy_term.TERM)
    yield toy_term.TERM
    unregister("toy")


def episode(dtype=torch.float64, graph=None):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    mask = make_mask(K, B, T, gen)
    so = make_outputs(mask, Ls, Hs, 2, C, gen, K=K, requires_grad=True, dtype=dtype, scores=False)
    to = make_outputs(mask, Lt, Ht, 2, C, gen, dtype=dtype, scores=False)
    labels = torch.randint(0, C, (K * B,), generator=gen)
    return so, to, mask, labels, graph_cfg(**(graph or {}))


def pair(terms, graph=None, dtype=torch.float64):
    so, to, mask, labels, g = episode(dtype, graph)
    fused = RelationalDistillLoss(Hs, Ht, Ls, Lt, K, g, terms=terms).to(dtype).eval()
    loop = ReferenceDistillLoss(Hs, Ht, Ls, Lt, K, g, terms=terms, params=fused.params).eval()
    return so, to, mask, labels, fused, loop


def test_builtin_terms_in_summation_order():
    assert [t.name for t in registered()][:5] == ["emb", "att", "hid", "pred", "ce"]
    assert [t.name for t, _ in active_terms({})] == ["emb", "att", "hid", "pred"]  # ce: default weight 0
    assert [t.name for t, _ in active_terms({}, task_head=False)] == ["emb", "att", "hid"]


def test_labels_only_recipe_is_the_per_domain_cross_entropy():
    """Configuration alone makes a labels-only loss: the other terms at weight 0 are not computed."""
    off = {"emb": 0.0, "att": 0.0, "hid": 0.0, "pred": 0.0, "ce": 0.7}
    so, to, mask, labels, fused, loop = pair(off)
    expected = 0.7 * F.cross_entropy(so.logits.float(), labels, reduction="none").view(K, B).mean(1).mean()
    for loss in (fused, loop):
        out = loss(so, to, mask, K, labels=labels)
        assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
        assert set(out.terms) == {"ce", "weights", "ratios"}
    assert not fused.attention_loss and "hidden" not in fused.reads


def test_a_weight_scales_its_term_alone():
    """kd (uniform 1/K): raising w_hid from 1 to 2.5 adds 1.5 (1/K) sum of the hidden terms, nothing else."""
    base = pair({}, graph={"enabled": False})
    more = pair({"hid": 2.5}, graph={"enabled": False})
    a = base[4](*base[:3], K)
    b = more[4](*more[:3], K)
    assert torch.allclose(b.total - a.total, 1.5 * a.terms["hid"].sum() / K, rtol=1e-12)
    assert torch.equal(a.terms["hid"], b.terms["hid"])


def test_a_registered_term_is_computed_by_both_forms(toy):
    """The toy module's term enters the fused total and the loop's, with equal values and gradients."""
    so, to, mask, labels, fused, loop = pair({"toy": 0.5})
    outs = [loss(so, to, mask, K, labels=labels) for loss in (fused, loop)]
    grads = [torch.autograd.grad(o.total, student_tensors(so)) for o in outs]
    assert torch.allclose(outs[0].total, outs[1].total, rtol=1e-12)
    assert torch.allclose(outs[0].terms["toy"], so.logits.detach().pow(2).reshape(K, -1).mean(1), rtol=1e-12)
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-14)
    without = RelationalDistillLoss(Hs, Ht, Ls, Lt, K, graph_cfg(), params=fused.params).double().eval()
    plain = without(so, to, mask, K, labels=labels)
    assert torch.allclose(outs[0].total - plain.total, 0.5 * outs[0].terms["toy"].mean(), rtol=1e-10)


def test_term_names_and_reads_are_checked():
    with pytest.raises(ValueError, match="already registered"):
        register(LossTerm("emb", "embedding", None, None, frozenset(), order=0))
    with pytest.raises(ValueError, match="reads"):
        register(LossTerm("bad", "domain", None, None, frozenset({"gradients"}), order=9))
    with pytest.raises(UserError, match="'distill.terms.nope'"):
        active_terms({"nope": 1.0})


def test_bad_weights_are_one_line_naming_the_field(tmp_path):
    with pytest.raises(UserError, match=r"'distill.terms.ce.weight'.*out of range"):
        load_config(None, ["distill.terms.ce.weight=-1"])
    with pytest.raises(UserError, match="'distill.terms.ce': expected a mapping"):
        load_config(None, ["distill.terms.ce=1"])
    both = tmp_path / "both.yaml"  # one file naming a setting twice, under its old and its new key
    both.write_text(yaml.safe_dump({"distill": {"label_weight": 0.5, "terms": {"ce": {"weight": 1.0}}}}))
    with pytest.raises(UserError, match="renamed to 'distill.terms.ce.weight', which is set too"):
        load_config(str(both))


def test_renamed_keys_read_as_their_replacements(tmp_path):
    """distill.label_weight and distill.attention_loss (earlier releases) set the terms' weights, and a
    run saved with them resumes under the same settings."""
    assert load_config(None, ["distill.label_weight=1.0"]).distill.terms["ce"].weight == 1.0
    assert load_config(None, ["distill.attention_loss=false"]).distill.terms["att"].weight == 0.0
    assert load_config(None, ["distill.label_weight=0", "distill.attention_loss=true"]).distill.terms == {}
    saved = tmp_path / "config.yaml"
    old = yaml.safe_load(yaml.safe_dump({"distill": {"label_weight": 1.0, "attention_loss": True}}))
    saved.write_text(yaml.safe_dump(old))
    check_resume_config(load_config(None, ["distill.terms.ce.weight=1.0"]), {}, saved)  # same run
    with pytest.raises(UserError, match="distill.terms.ce.weight=1.0"):
        check_resume_config(Config(), {}, saved)
    new = load_config(None, ["distill.terms.hid.weight=0.5"])
    save_config(new, tmp_path / "new.yaml")
    assert load_config(str(tmp_path / "new.yaml")).distill.terms["hid"].weight == 0.5


def test_a_toy_term_module_trains_two_steps_through_the_trainer(tmp_path):
    """The toy term, registered by importing its module, trains two real distillation steps; its
    per-domain values are logged, and at step 1 (before any update) it adds exactly w x its mean."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env["PYTHONPATH"]])
    launch = [sys.executable, "-c", "import sys, toy_term; from hrkd_ds.train import main; sys.exit(main(sys.argv[1:]))"]
    steps = ["teacher_train.max_steps=2", "distill_train.max_steps=2", "distill.method=kd"]
    a, b = tmp_path / "with", tmp_path / "without"
    assert_ok(run(launch + train_args(a, tmp_path / "cache", *steps, "distill.terms.toy.weight=0.5"), tmp_path / "a.log",
                  env=env), "with the toy term")
    assert_ok(run(launch + train_args(b, tmp_path / "cache", *steps, "stages=[distill]", f"teacher_from={a}"),
                  tmp_path / "b.log", env=env), "without it")
    with_toy, without = loss_rows(a, "student"), loss_rows(b, "student")
    assert [r["step"] for r in with_toy] == [1, 2]
    toy_1 = with_toy[0]["terms"]["toy"]
    assert set(toy_1) == set(without[0]["terms"]["emb"]) and all(v > 0 for v in toy_1.values())
    assert "toy" not in without[0]["terms"]
    mean_toy = sum(toy_1.values()) / len(toy_1)
    assert with_toy[0]["loss"] - without[0]["loss"] == pytest.approx(0.5 * mean_toy, rel=1e-4, abs=1e-6)
    assert yaml.safe_load((a / "config.yaml").read_text())["distill"]["terms"] == {"toy": {"weight": 0.5}}
