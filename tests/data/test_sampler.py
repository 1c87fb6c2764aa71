"""Properties of EpisodicDomainSampler over a few seeds, world sizes and uneven domains."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hrkd_ds.data.sampler import EpisodicDomainSampler
from hrkd_ds.errors import UserError

SIZES = [5, 17, 40, 101]


def ranks(sizes, batch, world, **kw):
    return [EpisodicDomainSampler(sizes, batch, rank=r, world_size=world, **kw) for r in range(world)]


def epoch(sampler) -> np.ndarray:
    """(steps, K, B) array of one full epoch."""
    return np.array(list(sampler))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_equal_steps_shapes_and_disjoint_ranks(world, batch):
    for seed in range(3):
        eps = [epoch(s) for s in ranks(SIZES, batch, world, seed=seed)]
        steps = math.ceil(max(SIZES) / (batch * world))
        assert {e.shape for e in eps} == {(steps, len(SIZES), batch)}
        stacked = np.stack(eps)  # (W, steps, K, B)
        for k, n in enumerate(SIZES):
            per_rank = [set(stacked[r, :, k].ravel().tolist()) for r in range(world)]
            assert all(a.isdisjoint(b) for i, a in enumerate(per_rank) for b in per_rank[i + 1 :]), "ranks overlap over the epoch"
            for s in range(steps):  # disjoint at every step (each rank's own batch may repeat only when its share < B)
                blocks = [set(stacked[r, s, k].tolist()) for r in range(world)]
                assert sum(map(len, blocks)) == len(set().union(*blocks))
            assert set().union(*per_rank) == set(range(n)), "every example of every domain seen (all fit this epoch)"
            assert stacked[:, :, k].min() >= 0 and stacked[:, :, k].max() < n


def test_epoch_domain_covered_exactly_once_before_cycling():
    for world in (1, 2, 3):
        eps = np.stack([epoch(s) for s in ranks(SIZES, 4, world, seed=7, epoch_policy="domain", epoch_domain=2)])
        assert eps.shape[1] == math.ceil(40 / (4 * world))
        seen = eps[:, :, 2].ravel()
        assert set(seen.tolist()) == set(range(40))
        larger = set(eps[:, :, 3].ravel().tolist())  # the 101-example domain is cut to the epoch length
        assert len(larger) == eps.shape[1] * 4 * world


def test_world1_stream_is_concatenated_permutations():
    s = EpisodicDomainSampler([7, 30], 4, seed=3)
    stream = epoch(s)[:, 0].ravel()
    for lo in range(0, stream.size - 7 + 1, 7):
        assert sorted(stream[lo : lo + 7]) == list(range(7))


def test_deterministic_and_seeded_per_epoch():
    a, b = (EpisodicDomainSampler(SIZES, 4, rank=1, world_size=2, seed=11) for _ in range(2))
    e0a, e0b = epoch(a), epoch(b)
    np.testing.assert_array_equal(e0a, e0b)
    assert a.epoch == 1 and a.step == 0
    e1 = epoch(a)
    assert not np.array_equal(e0a, e1), "a new epoch reshuffles"
    c = EpisodicDomainSampler(SIZES, 4, rank=1, world_size=2, seed=12)
    assert not np.array_equal(e0a, epoch(c)), "the seed matters"
    b.set_epoch(1)
    np.testing.assert_array_equal(epoch(b), e1)


def forever(sampler):
    while True:
        yield from sampler


@pytest.mark.parametrize("cut", [0, 1, 5, 12, 13, 20])
def test_resume_mid_epoch_identical(cut):
    kw = dict(rank=2, world_size=3, seed=5)
    ref = list(itertools.islice(forever(EpisodicDomainSampler(SIZES, 3, **kw)), 24))
    run = EpisodicDomainSampler(SIZES, 3, **kw)
    done = list(itertools.islice(forever(run), cut))
    state = run.state_dict()
    assert set(state) >= {"epoch", "step"}
    fresh = EpisodicDomainSampler(SIZES, 3, **kw)
    fresh.load_state_dict(state)
    assert done + list(itertools.islice(forever(fresh), 24 - cut)) == ref


def test_state_counts_consumed_steps():
    s = EpisodicDomainSampler([10, 20], 2)
    it = iter(s)
    next(it), next(it)
    assert s.state_dict()["step"] == 2 and s.state_dict()["epoch"] == 0


def test_policies():
    assert len(EpisodicDomainSampler(SIZES, 4, world_size=2)) == math.ceil(101 / 8)
    assert len(EpisodicDomainSampler(SIZES, 4, world_size=2, epoch_policy="domain", epoch_domain=1)) == math.ceil(17 / 8)
    assert len(EpisodicDomainSampler({"a": 5, "b": 9}, 2, epoch_policy="domain", epoch_domain="b")) == 5
    s = EpisodicDomainSampler(SIZES, 4, epoch_policy="steps", steps_per_epoch=50)
    assert len(epoch(s)) == 50


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(epoch_policy="bogus"), "epoch_policy"),
        (dict(epoch_policy="domain", epoch_domain=9), "epoch_domain"),
        (dict(epoch_policy="domain"), "epoch_domain"),
        (dict(epoch_policy="steps"), "steps_per_epoch"),
        (dict(world_size=6, rank=0), "world_size"),
        (dict(world_size=2, rank=2), "rank"),
    ],
)
def test_bad_arguments(kw, word):
    with pytest.raises(UserError, match=word):
        EpisodicDomainSampler(SIZES, 4, **kw)


def test_mismatched_resume_rejected():
    state = EpisodicDomainSampler(SIZES, 4, seed=1).state_dict()
    for other in (EpisodicDomainSampler(SIZES, 4, seed=2), EpisodicDomainSampler(SIZES, 5, seed=1), EpisodicDomainSampler(SIZES, 4, seed=1, world_size=2)):
        with pytest.raises(UserError, match="sampler state"):
            other.load_state_dict(state)


def test_global_batch_is_independent_of_world_size_before_cycling():
    """W ranks with batch B hold together exactly the batch one rank with B*W gets."""
    sizes, global_batch, steps = [96, 80, 64], 8, 8  # 8 steps x 8 = 64: no domain cycles yet
    one = EpisodicDomainSampler(sizes, global_batch, seed=11)
    single = [ep for _, ep in zip(range(steps), one)]
    for world in (2, 4):
        ranks = [EpisodicDomainSampler(sizes, global_batch // world, rank=r, world_size=world, seed=11) for r in range(world)]
        per_rank = [[ep for _, ep in zip(range(steps), s)] for s in ranks]
        for step in range(steps):
            for d in range(len(sizes)):
                merged = sorted(i for r in range(world) for i in per_rank[r][step][d])
                assert merged == sorted(single[step][d]), (world, step, d)
