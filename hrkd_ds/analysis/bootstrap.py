"""Paired, domain-stratified bootstrap for "method a beats method b" on the same test examples.

Why paired: both methods are scored on the same examples, so the example-level difficulty cancels
and the interval is far tighter (and more honest) than comparing two independent means.
Why stratified by domain: the reported metric is the unweighted average of per-domain accuracies;
resampling within each domain keeps every domain's size fixed, so the statistic stays defined.

Seeds are pooled: the statistic is the mean over seed-pairs of (avg-over-domains acc_a - acc_b).
When every seed-pair was scored on the very same examples (same labels and domains in the same
order: the fixed split order), one resample of example indices is shared by all seeds, because
the test set is a single sample; resampling each seed independently would treat the same example
as independent draws and understate the spread. Otherwise each (seed, domain) is its own stratum.

Vectorised: the bootstrap mean of a stratum depends only on how many times each distinct value
is drawn, so a multinomial over the distinct values (with their empirical frequencies) is the
same distribution as drawing indices, at O(B x distinct values) instead of O(B x examples).

Protocol v2 (`hierarchical_bootstrap`): the interval above holds the runs fixed, so seed-to-seed
variance (initialisation, data order) is not in it. The hierarchical bootstrap resamples seeds
first (the same seed draws for both methods: the runs are paired by seed), then test examples
within each domain (the same draw for both methods and for every seed: one test set), and
averages over domains as the table does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_N_BOOT = 10_000
_CHUNK_CELLS = 4_000_000  # max (resamples x distinct values) drawn at once
_TIE_EPS = 1e-12  # an exact tie counts as "<= 0" despite float rounding

Pair = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]  # (pred_a, pred_b, label, domain) of one seed


@dataclass(frozen=True)
class BootstrapResult:
    """Observed difference a - b, its percentile interval and P(difference <= 0) under resampling."""

    diff: float  # observed mean over seed-pairs of (average-over-domains accuracy a - b)
    lo: float
    hi: float
    p_le_0: float  # fraction of resamples with difference <= 0
    sd: float  # standard deviation of the bootstrap distribution
    level: float
    n_boot: int
    n_pairs: int
    shared_examples: bool
    domains: list[str]
    per_domain: dict[str, float] = field(default_factory=dict)  # observed a - b per domain, mean over seeds

    @property
    def interval(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_pair(pair: Pair, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pa, pb, lab, dom = (np.asarray(x) for x in pair)
    n = len(lab)
    if not (len(pa) == len(pb) == len(dom) == n) or n == 0:
        raise ValueError(f"seed-pair {i}: pred_a, pred_b, label, domain must be equal, non-zero lengths "
                         f"(got {len(pa)}, {len(pb)}, {n}, {len(dom)})")
    return pa, pb, lab, dom.astype(str)


def _domains_in_order(domain: np.ndarray) -> list[str]:
    _, first = np.unique(domain, return_index=True)
    return [str(domain[i]) for i in sorted(first)]


def _strata(pairs: list[tuple[np.ndarray, ...]], shared: bool) -> tuple[list[tuple[np.ndarray, float]], list[str], dict[str, float]]:
    """(per-example difference vector, weight) per stratum; weights sum to 1."""
    diffs = [(pa == lab).astype(np.float64) - (pb == lab).astype(np.float64) for pa, pb, lab, _ in pairs]
    domains = _domains_in_order(np.concatenate([p[3] for p in pairs]))
    strata: list[tuple[np.ndarray, float]] = []
    per_domain: dict[str, list[float]] = {d: [] for d in domains}
    if shared:
        mean_diff = np.mean(diffs, axis=0)  # per example, averaged over seeds
        dom = pairs[0][3]
        for d in domains:
            x = mean_diff[dom == d]
            strata.append((x, 1.0 / len(domains)))
            per_domain[d].append(float(x.mean()))
    else:
        for diff, (_, _, _, dom) in zip(diffs, pairs):
            present = _domains_in_order(dom)
            for d in present:
                x = diff[dom == d]
                strata.append((x, 1.0 / (len(pairs) * len(present))))
                per_domain[d].append(float(x.mean()))
    return strata, domains, {d: float(np.mean(v)) for d, v in per_domain.items()}


def _stratum_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot bootstrap means of x (drawing len(x) with replacement), via distinct-value counts."""
    values, counts = np.unique(x, return_counts=True)
    n = len(x)
    probs = counts / n
    chunk = max(1, _CHUNK_CELLS // len(values))
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        draws = rng.multinomial(n, probs, size=stop - start)  # (chunk, distinct)
        out[start:stop] = draws @ values / n
    return out


def _checked_pairs(pairs, n_boot: int, level: float, name: str):
    """The seed-pairs as arrays, and whether every pair scored the same examples (labels, domains)."""
    if not pairs:
        raise ValueError(f"{name} needs at least one seed-pair")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1 (got {n_boot}, {level})")
    arrays = [_as_pair(p, i) for i, p in enumerate(pairs)]
    return arrays, all(np.array_equal(a[2], arrays[0][2]) and np.array_equal(a[3], arrays[0][3]) for a in arrays)


def paired_bootstrap(
    pairs: Sequence[Pair],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    shared_examples: bool | None = None,
) -> BootstrapResult:
    """Paired bootstrap of the average-over-domains accuracy difference a - b, pooled over seeds.

    `pairs`: one (pred_a, pred_b, label, domain) per seed-pair (runs of a and b with the same seed).
    `shared_examples`: None = detect (all pairs have identical label and domain arrays).
    """
    arrays, same = _checked_pairs(pairs, n_boot, level, "paired_bootstrap")
    if shared_examples is None:
        shared_examples = same
    elif shared_examples and not same:
        raise ValueError("shared_examples=True but the seed-pairs' labels/domains differ (not the same examples)")
    strata, domains, per_domain = _strata(arrays, shared_examples)
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot, dtype=np.float64)
    observed = 0.0
    for x, w in strata:
        boot += w * _stratum_means(x, n_boot, rng)
        observed += w * float(x.mean())
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return BootstrapResult(
        diff=observed, lo=float(lo), hi=float(hi), p_le_0=float(np.mean(boot <= _TIE_EPS)),
        sd=float(boot.std(ddof=1)) if n_boot > 1 else 0.0, level=level, n_boot=n_boot,
        n_pairs=len(arrays), shared_examples=bool(shared_examples), domains=domains, per_domain=per_domain,
    )


def _seed_domain_means(arrays: list[tuple[np.ndarray, ...]], shared: bool, n_boot: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(observed average-over-domains difference per seed (S,), its resamples over examples (B, S), domains)."""
    diffs = [(pa == lab).astype(np.float64) - (pb == lab).astype(np.float64) for pa, pb, lab, _ in arrays]
    domains = _domains_in_order(np.concatenate([a[3] for a in arrays]))
    observed, boot = np.zeros(len(arrays)), np.zeros((n_boot, len(arrays)))
    if shared:  # one draw of examples per resample, shared by every seed: distinct per-example rows of seed diffs
        dom = arrays[0][3]
        for d in domains:
            x = np.stack([df[dom == d] for df in diffs], axis=1)  # (n_d, S)
            rows, counts = np.unique(x, axis=0, return_counts=True)
            n = len(x)
            chunk = max(1, _CHUNK_CELLS // len(rows))
            for start in range(0, n_boot, chunk):
                stop = min(n_boot, start + chunk)
                boot[start:stop] += rng.multinomial(n, counts / n, size=stop - start) @ rows / (n * len(domains))
            observed += x.mean(axis=0) / len(domains)
    else:  # each seed scored other examples: each (seed, domain) its own stratum
        for s, (diff, (_, _, _, dom)) in enumerate(zip(diffs, arrays)):
            present = _domains_in_order(dom)
            for d in present:
                boot[:, s] += _stratum_means(diff[dom == d], n_boot, rng) / len(present)
                observed[s] += float(diff[dom == d].mean()) / len(present)
    return observed, boot, domains


def hierarchical_bootstrap(
    pairs: Sequence[Pair],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Protocol v2 interval of the average-over-domains difference a - b: seeds, then examples.

    `pairs`: one (pred_a, pred_b, label, domain) per seed both methods have. Each resample draws S
    seeds with replacement (paired: a seed drawn brings both methods' runs), and per domain the
    test examples with replacement (the same draw for both methods and all seeds when every seed
    scored the same examples); the statistic is the mean over the drawn seeds of the mean over
    domains. With no example noise it is the seed-only bootstrap of the per-seed differences; with
    one seed it is the example-only interval. Percentile interval at `level`; deterministic in `seed`.
    """
    arrays, shared = _checked_pairs(pairs, n_boot, level, "hierarchical_bootstrap")
    rng = np.random.default_rng(seed)
    n_seeds = len(arrays)
    seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot) / n_seeds  # (B, S), rows sum to 1
    observed, example_boot, domains = _seed_domain_means(arrays, shared, n_boot, rng)
    boot = (seed_w * example_boot).sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return {"diff": float(observed.mean()), "lo": float(lo), "hi": float(hi), "p_le_0": float(np.mean(boot <= _TIE_EPS)),
            "sd": float(boot.std(ddof=1)) if n_boot > 1 else 0.0, "level": level, "n_boot": n_boot, "n_seeds": n_seeds,
            "per_seed": [float(x) for x in observed], "shared_examples": bool(shared), "domains": domains,
            "method": "hierarchical bootstrap: seeds (paired), then test examples within each domain (paired)"}


def pair_from_predictions(pred_a: Mapping[str, Any], pred_b: Mapping[str, Any], split: str = "test",
                          domains: Sequence[str] | None = None) -> Pair:
    """One seed-pair from two predictions.json dicts ({split: {domain: {"pred": [...], "label": [...]}}}).

    Refuses pairs whose labels differ: then the runs did not see the same examples in the same order.
    """
    sa, sb = pred_a[split], pred_b[split]
    doms = list(domains) if domains is not None else [d for d in sa if d in sb]
    if not doms:
        raise ValueError(f"no common domains in split {split!r}")
    pa, pb, lab, dom = [], [], [], []
    for d in doms:
        la, lb = np.asarray(sa[d]["label"]), np.asarray(sb[d]["label"])
        if not np.array_equal(la, lb):
            raise ValueError(f"split {split!r} domain {d!r}: labels differ between the two runs, they cannot be paired")
        if len(sa[d]["pred"]) != len(la) or len(sb[d]["pred"]) != len(la):
            raise ValueError(f"split {split!r} domain {d!r}: pred and label lengths differ")
        pa.append(np.asarray(sa[d]["pred"]))
        pb.append(np.asarray(sb[d]["pred"]))
        lab.append(la)
        dom.append(np.full(len(la), d))
    return np.concatenate(pa), np.concatenate(pb), np.concatenate(lab), np.concatenate(dom)
