"""Protocol v2's hierarchical bootstrap (seeds, then examples) on constructed cases with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hrkd_ds.analysis.bootstrap import hierarchical_bootstrap, paired_bootstrap

DOMS = ("w", "x", "y", "z")


def _pair(correct_a, correct_b, domain):
    """Binary task, label 0 everywhere: right <=> pred 0."""
    ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return np.where(ca, 0, 1), np.where(cb, 0, 1), np.zeros(len(ca), int), np.asarray(domain)


def _noiseless(wins: int, n: int = 50):
    """No example noise: a beats b on every example of the first `wins` of 4 domains, ties on the
    rest, so this seed's difference is wins / 4 on every resample of examples."""
    dom = np.repeat(DOMS, n)
    ca = np.ones(len(dom), bool)
    cb = ~np.isin(dom, DOMS[:wins])
    return _pair(ca, cb, dom)


def test_without_example_noise_two_seeds_give_the_exact_seed_bootstrap():
    # per-seed differences 0 and 1: a resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    res = hierarchical_bootstrap([_noiseless(0), _noiseless(4)], n_boot=20_000, seed=1)
    assert res["diff"] == pytest.approx(0.5) and res["per_seed"] == [0.0, 1.0]
    assert (res["lo"], res["hi"]) == (0.0, 1.0)
    assert res["p_le_0"] == pytest.approx(0.25, abs=0.01)
    assert res["sd"] == pytest.approx(math.sqrt(0.125), rel=0.02)
    assert res["n_seeds"] == 2 and res["shared_examples"]


def test_without_example_noise_five_seeds_match_the_enumerated_seed_bootstrap():
    wins = [0, 1, 2, 3, 4]  # per-seed differences 0, 0.25, ..., 1
    res = hierarchical_bootstrap([_noiseless(w) for w in wins], n_boot=40_000, seed=2)
    deltas = np.array(wins) / 4
    means = np.array([deltas[list(c)].mean() for c in itertools.product(range(5), repeat=5)])  # all 5^5 draws
    srt = np.sort(means)
    assert res["lo"] == pytest.approx(srt[int(0.025 * len(srt))], abs=1e-12)
    assert res["hi"] == pytest.approx(srt[int(0.975 * len(srt))], abs=1e-12)
    # the t-like spread: the bootstrap sd of a mean of n draws is s * sqrt((n - 1) / n) / sqrt(n)
    n = len(deltas)
    assert res["sd"] == pytest.approx(deltas.std(ddof=1) * math.sqrt((n - 1) / n) / math.sqrt(n), rel=0.02)
    assert res["sd"] == pytest.approx(means.std(), rel=0.02)


def test_identical_seeds_reduce_to_the_example_only_interval():
    rng = np.random.default_rng(4)
    dom = np.repeat(DOMS, 300)
    one = _pair(rng.random(len(dom)) < 0.8, rng.random(len(dom)) < 0.75, dom)
    hier = hierarchical_bootstrap([one, one, one], n_boot=20_000, seed=0)
    old = paired_bootstrap([one, one, one], n_boot=20_000, seed=0)
    assert hier["diff"] == pytest.approx(old.diff, abs=1e-12)
    assert hier["sd"] == pytest.approx(old.sd, rel=0.04)
    assert hier["lo"] == pytest.approx(old.lo, abs=0.004) and hier["hi"] == pytest.approx(old.hi, abs=0.004)


def test_seed_variance_widens_the_interval_the_old_one_ignores():
    rng = np.random.default_rng(5)
    dom = np.repeat(DOMS, 300)
    base_b = rng.random(len(dom)) < 0.7

    def seed_pair(p_a):
        return _pair(rng.random(len(dom)) < p_a, base_b, dom)

    calm = [seed_pair(0.72) for _ in range(5)]
    wild = [seed_pair(p) for p in (0.60, 0.68, 0.77, 0.85, 0.90)]  # a gains 6 pts on average, seeds spread
    h_calm, h_wild = (hierarchical_bootstrap(p, n_boot=5000, seed=0) for p in (calm, wild))
    o_wild = paired_bootstrap(wild, n_boot=5000, seed=0)
    assert h_wild["hi"] - h_wild["lo"] > 2.5 * (h_calm["hi"] - h_calm["lo"])
    assert h_wild["hi"] - h_wild["lo"] > 3 * (o_wild.hi - o_wild.lo)  # the example-only interval misses it
    assert h_wild["lo"] < 0 < h_wild["hi"] and o_wild.lo > 0  # and only the old one excludes 0


def test_deterministic_in_its_seed_and_refuses_nonsense():
    rng = np.random.default_rng(6)
    dom = np.repeat(DOMS, 40)
    pairs = [_pair(rng.random(len(dom)) < 0.7, rng.random(len(dom)) < 0.6, dom) for _ in range(3)]
    assert hierarchical_bootstrap(pairs, n_boot=500, seed=3) == hierarchical_bootstrap(pairs, n_boot=500, seed=3)
    assert hierarchical_bootstrap(pairs, n_boot=500, seed=3)["lo"] != hierarchical_bootstrap(pairs, n_boot=500, seed=4)["lo"]
    with pytest.raises(ValueError):
        hierarchical_bootstrap([], n_boot=10)
    with pytest.raises(ValueError):
        hierarchical_bootstrap(pairs, n_boot=0)


def test_seeds_on_different_examples_resample_each_seed_apart():
    # seed 1 and seed 2 scored different examples (labels differ): no shared draw, same observed mean
    dom = np.repeat(DOMS, 100)
    p1 = _noiseless(2, 100)
    pa, pb, lab, d = _noiseless(2, 100)
    p2 = (1 - pa, 1 - pb, np.ones(len(lab), int), d)  # the same correctness under flipped labels
    res = hierarchical_bootstrap([p1, p2], n_boot=1000, seed=0)
    assert not res["shared_examples"] and res["diff"] == pytest.approx(0.5)
    assert res["lo"] == res["hi"] == pytest.approx(0.5)  # no noise anywhere: collapsed
    assert len(dom) == len(lab)
