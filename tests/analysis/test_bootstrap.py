"""Paired bootstrap: known answers (collapsed intervals, analytic normal approximation), seeding, pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrkd_ds.analysis.bootstrap import pair_from_predictions, paired_bootstrap


def _pair_from_correct(correct_a, correct_b, domain):
    """Predictions of a binary task with label 0 everywhere: right <=> pred 0."""
    ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return (np.where(ca, 0, 1), np.where(cb, 0, 1), np.zeros(len(ca), int), np.asarray(domain))


def test_constant_difference_collapses_interval():
    # domain x: a and b right on the same examples (diff 0); domain y: a always right, b always wrong (diff 1)
    rng = np.random.default_rng(1)
    both = rng.random(300) < 0.7
    ca = np.concatenate([both, np.ones(200, bool)])
    cb = np.concatenate([both, np.zeros(200, bool)])
    dom = np.array(["x"] * 300 + ["y"] * 200)
    res = paired_bootstrap([_pair_from_correct(ca, cb, dom)], n_boot=2000, seed=3)
    assert res.diff == pytest.approx(0.5, abs=1e-12)
    assert res.lo == pytest.approx(0.5, abs=1e-12) and res.hi == pytest.approx(0.5, abs=1e-12)
    assert res.sd == pytest.approx(0.0, abs=1e-12)
    assert res.p_le_0 == 0.0
    assert res.per_domain == pytest.approx({"x": 0.0, "y": 1.0})


def test_shared_examples_pool_seeds_per_example():
    # seed 1: a beats b on the first half, seed 2 on the second half; b beats a elsewhere never.
    # Per example the seed-averaged difference is 0.5 everywhere: constant, so the pooled interval
    # collapses when the resample is shared across seeds, and must not when seeds are independent.
    n = 400
    first = np.arange(n) < n // 2
    dom = np.array(["d"] * n)
    p1 = _pair_from_correct(np.ones(n, bool), ~first, dom)
    p2 = _pair_from_correct(np.ones(n, bool), first, dom)
    shared = paired_bootstrap([p1, p2], n_boot=2000, seed=0)
    assert shared.shared_examples
    assert shared.diff == pytest.approx(0.5) and shared.hi - shared.lo == pytest.approx(0.0, abs=1e-12)
    indep = paired_bootstrap([p1, p2], n_boot=2000, seed=0, shared_examples=False)
    assert indep.diff == pytest.approx(0.5)
    # each seed: mean of n Bernoulli(0.5) -> sd 0.5/sqrt(n); average of two independent -> / sqrt(2)
    assert indep.sd == pytest.approx(0.5 / math.sqrt(n) / math.sqrt(2), rel=0.06)


def test_interval_matches_normal_approximation():
    rng = np.random.default_rng(7)
    sizes = {"a": 3000, "b": 2000, "c": 2500}
    pairs, dom_all, diffs = [], [], {}
    ca_all, cb_all = [], []
    for d, n in sizes.items():
        ca = rng.random(n) < 0.85
        cb = rng.random(n) < 0.80
        ca_all.append(ca), cb_all.append(cb), dom_all.append(np.full(n, d))
        diffs[d] = ca.astype(float) - cb.astype(float)
    pairs = [_pair_from_correct(np.concatenate(ca_all), np.concatenate(cb_all), np.concatenate(dom_all))]
    res = paired_bootstrap(pairs, n_boot=10_000, seed=11)
    k = len(sizes)
    mean = sum(x.mean() for x in diffs.values()) / k
    sd = math.sqrt(sum(x.var() / len(x) for x in diffs.values())) / k  # bootstrap variance uses ddof=0
    assert res.diff == pytest.approx(mean, abs=1e-12)
    assert res.sd == pytest.approx(sd, rel=0.03)
    assert res.lo == pytest.approx(mean - 1.96 * sd, abs=0.1 * sd)
    assert res.hi == pytest.approx(mean + 1.96 * sd, abs=0.1 * sd)
    p_normal = 0.5 * math.erfc(mean / sd / math.sqrt(2))
    assert res.p_le_0 == pytest.approx(p_normal, abs=0.01)


def test_matches_index_resampling_bootstrap():
    # the distinct-value multinomial shortcut must give the same distribution as drawing indices
    rng = np.random.default_rng(5)
    n = 150
    pa, pb, lab = rng.integers(0, 3, n), rng.integers(0, 3, n), rng.integers(0, 3, n)
    dom = np.where(np.arange(n) < 60, "p", "q")
    res = paired_bootstrap([(pa, pb, lab, dom)], n_boot=20_000, seed=2)
    diff = (pa == lab).astype(float) - (pb == lab).astype(float)
    naive = np.zeros(20_000)
    for d in ("p", "q"):
        x = diff[dom == d]
        idx = rng.integers(0, len(x), size=(20_000, len(x)))
        naive += x[idx].mean(axis=1) / 2
    assert res.sd == pytest.approx(naive.std(ddof=1), rel=0.03)
    assert res.lo == pytest.approx(np.quantile(naive, 0.025), abs=0.15 * res.sd)
    assert res.hi == pytest.approx(np.quantile(naive, 0.975), abs=0.15 * res.sd)


def test_deterministic_by_seed():
    rng = np.random.default_rng(0)
    n = 500
    pair = (rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n), np.where(np.arange(n) % 3, "u", "v"))
    a = paired_bootstrap([pair], n_boot=3000, seed=42)
    b = paired_bootstrap([pair], n_boot=3000, seed=42)
    c = paired_bootstrap([pair], n_boot=3000, seed=43)
    assert a == b
    assert (a.lo, a.hi, a.p_le_0) != (c.lo, c.hi, c.p_le_0)
    assert a.diff == c.diff


def test_p_le_0_counts_ties():
    # a == b everywhere: every resample difference is exactly 0
    n = 50
    pred = np.arange(n) % 2
    res = paired_bootstrap([(pred, pred, np.zeros(n, int), np.full(n, "d"))], n_boot=500)
    assert res.diff == 0.0 and res.p_le_0 == 1.0


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        paired_bootstrap([])
    with pytest.raises(ValueError):
        paired_bootstrap([([0, 1], [0], [0, 1], ["d", "d"])])
    p1 = ([0, 1], [0, 1], [0, 1], ["d", "d"])
    p2 = ([0, 1], [0, 1], [1, 1], ["d", "d"])
    with pytest.raises(ValueError):
        paired_bootstrap([p1, p2], shared_examples=True)
    assert not paired_bootstrap([p1, p2], n_boot=10).shared_examples


def test_pair_from_predictions():
    a = {"test": {"x": {"pred": [1, 0], "label": [1, 1]}, "y": {"pred": [0], "label": [0]}}}
    b = {"test": {"x": {"pred": [1, 1], "label": [1, 1]}, "y": {"pred": [1], "label": [0]}}}
    pa, pb, lab, dom = pair_from_predictions(a, b)
    assert list(pa) == [1, 0, 0] and list(pb) == [1, 1, 1] and list(lab) == [1, 1, 0] and list(dom) == ["x", "x", "y"]
    res = paired_bootstrap([(pa, pb, lab, dom)], n_boot=100)
    assert res.diff == pytest.approx(((0.5 - 1.0) + (1.0 - 0.0)) / 2)
    bad = {"test": {"x": {"pred": [1, 1], "label": [0, 1]}, "y": {"pred": [1], "label": [0]}}}
    with pytest.raises(ValueError, match="labels differ"):
        pair_from_predictions(a, bad)
