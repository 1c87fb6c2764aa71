"""The pooled-representation term (`pool`, distill/loss_terms/pooled.py): the student's last-layer
state at position 0, projected, against the teacher's. Fused against the loop and a hand
computation in float64, its gradient reaches W_p, the teacher keeps only its last layer for it, a
loss without it has no W_p (earlier checkpoints load), it crosses tokenizers and cached targets
can stand in for the teacher (distill/test_teacher_targets.py: the step from the cache)."""

from __future__ import annotations

import pytest
import torch

from distill_inputs import PAIR_DIMS, graph_cfg, loss_pair, student_tensors

from hrkd_ds.config import DistillConfig, TermConfig
from hrkd_ds.distill import RelationalDistillLoss
from hrkd_ds.distill.methods import LOGIT_KD_TERMS, METHODS, term_weights
from hrkd_ds.distill.teacher_targets import cacheable, reads_pooled
from hrkd_ds.distill.term_registry import refuse_token_level

K, B, T, Hs, Ht, Ls, Lt, C = PAIR_DIMS.values()
# logit-kd's kl with the pooled term; ce off here, as it is computed in float32 (labels.py)
POOL = {**LOGIT_KD_TERMS, "ce": TermConfig(0.0), "pool": TermConfig(0.7)}


def _pair(terms):
    return loss_pair(terms, seed=11)


def test_fused_matches_the_loop_and_the_equation_float64():
    so, to, mask, labels, fused, loop = _pair(POOL)
    outs = [loss(so, to, mask, K, labels=labels) for loss in (fused, loop)]
    assert torch.allclose(outs[0].terms["pool"], outs[1].terms["pool"], rtol=1e-12)
    assert torch.allclose(outs[0].total, outs[1].total, rtol=1e-12)
    w = fused.params.pool_projection
    by_hand = torch.stack([((w(so.hidden_states[-1][r, 0]) - to.hidden_states[Lt - 1][r, 0]) ** 2).mean()
                           for r in (slice(d * B, (d + 1) * B) for d in range(K))])
    assert torch.allclose(outs[0].terms["pool"], by_hand, rtol=1e-12)
    without = RelationalDistillLoss(Hs, Ht, Ls, Lt, K, graph_cfg(enabled=False), terms={**POOL, "pool": TermConfig(0.0)}).double().eval()
    rest = without(so, to, mask, K, labels=labels).total
    assert torch.allclose(outs[0].total, rest + 0.7 * by_hand.mean(), rtol=1e-12)  # (1/K) sum_d, weight 0.7
    leaves = [*student_tensors(so), w.weight, w.bias]
    grads = [torch.autograd.grad(o.total, leaves, allow_unused=True) for o in outs]
    for ga, gb in zip(*grads):
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-14)
    assert grads[0][-2].abs().sum() > 0  # W_p learns
    assert grads[0][len(student_tensors(so)) - 1 - len(so.attentions)].abs().sum() > 0  # the last layer's states


def test_only_a_loss_that_reads_it_has_w_p_and_asks_for_the_teachers_last_layer():
    *_, fused, _ = _pair(POOL)
    assert fused.params.pool_projection is not None
    *_, plain, _ = _pair(LOGIT_KD_TERMS)
    assert plain.params.pool_projection is None and not any("pool" in k for k in plain.state_dict())

    class Selects:
        def select_internals(self, hidden_layers, map_layers):
            self.hidden_layers, self.map_layers = tuple(hidden_layers), tuple(map_layers)

    student, teacher = Selects(), Selects()
    fused.request_internals(student, teacher)
    assert teacher.hidden_layers == (Lt,) and teacher.map_layers == ()
    with pytest.raises(ValueError, match="pooled=True"):
        RelationalDistillLoss(Hs, Ht, Ls, Lt, K, graph_cfg(enabled=False), terms=POOL, params=plain.params)


def test_it_crosses_tokenizers_and_the_cache_can_hold_it():
    cfg = DistillConfig(method="logit-kd", terms={"pool": TermConfig(1.0)})
    weights = term_weights(METHODS["logit-kd"], cfg)
    refuse_token_level(weights, True, "logit-kd")  # no error: one vector per example
    assert cacheable(weights) and reads_pooled(weights)  # cached targets store the pooled states too
    plain = term_weights(METHODS["logit-kd"], DistillConfig(method="logit-kd"))
    assert cacheable(plain) and not reads_pooled(plain)
