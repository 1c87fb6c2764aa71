"""How a run's domain weights behaved, read back from its metrics.jsonl.

Why a module of its own: the graph study (tools/graph_study.py) and the reproduction grid's report
ask the same question of a run, whether the graph's weights r over domains moved, how far from 1/K,
and whether they followed the domains' losses, and must answer it with the same numbers. Per level
(the embeddings, and the last student layer, prefixed top_), over the logged steps:
- jump: mean |r_t - r_(t-1)| between consecutive logged steps;
- entropy: mean entropy of r / log K (1 = uniform, 0 = one domain takes all);
- max_weight: mean of the largest weight (1/K when uniform);
- easiest: share of steps whose largest weight sits on the level's smallest-loss domain, over
  the steps where one domain has the largest weight (undefined when the weights stay uniform);
- corr: mean Spearman correlation over steps between r_d and the domain's loss (ties share ranks);
- align_corr (graph.objective=meta runs, which log the held-out alignment A): the same between r_d
  and A_d, i.e. whether the weights went where the held-out gradient said a domain helps;
- mean_weight_<d>: domain d's mean weight, so the report can say where the weight went and how
  that domain's accuracy moved (analysis/results.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hrkd_ds.tracking.metrics import MetricsLog

# written beside a student's predictions when its run logged weights (an hrkd-family run)
SUMMARY_FILE = "student/domain_weights.json"
SUMMARY_META = ("domains", "logged_steps")  # what a summary says about its run, beside the statistics
MEAN_WEIGHT = "mean_weight_"  # + domain: that domain's mean weight over the logged steps


_TIE = 1e-6  # weights this close are one weight: uniform 1/K comes out of the graph within ~1e-9


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank: uniform weights must not rank by domain order."""
    r = np.empty(len(a))
    r[np.argsort(a, kind="stable")] = np.arange(len(a))
    for i in range(len(a)):
        tied = np.abs(a - a[i]) <= _TIE
        r[tied] = r[tied].mean()
    return r


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _level_loss(row: dict, level: int, domains: list[str]) -> list[float]:
    """The loss the level's weights multiply: emb at level 0, att + hid of student layer l above it."""
    t = row["terms"]
    if level == 0:
        return [t["emb"][d] for d in domains]
    return [sum(t[k][level - 1][d] for k in ("att", "hid") if k in t) for d in domains]


def _weighted_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "weights" in r and "emb" in r.get("terms", {})]


def weight_stats(rows: list[dict], domains: list[str], level: int = 0) -> dict[str, float]:
    """Behaviour of one level's weights r_g against that level's loss, over logged steps."""
    rows = _weighted_rows(rows)
    if len(rows) < 2:
        return {}
    K = len(domains)
    w = np.array([r["weights"][level] for r in rows])  # (S, K)
    loss = np.array([_level_loss(r, level, domains) for r in rows])  # (S, K)
    ent = -(w * np.log(np.clip(w, 1e-12, 1))).sum(1) / math.log(K)
    corr = [_spearman(w[i], loss[i]) for i in range(len(rows))]
    # a step whose largest weight is shared picks no domain: it counts in neither the share nor its base
    picked = (np.abs(w - w.max(1, keepdims=True)) <= _TIE).sum(1) == 1
    on_easiest = (w.argmax(1) == loss.argmin(1))[picked]
    out = {
        "jump": float(np.abs(np.diff(w, axis=0)).mean()),
        "entropy": float(ent.mean()),
        "max_weight": float(w.max(1).mean()),
        "easiest": float(on_easiest.mean()) if len(on_easiest) else float("nan"),
        "corr": _mean_defined(corr),
    }
    out.update({f"{MEAN_WEIGHT}{d}": float(w[:, k].mean()) for k, d in enumerate(domains)})
    if all("alignment" in r for r in rows):
        align = np.array([r["alignment"][level] for r in rows])  # (S, K)
        out["align_corr"] = _mean_defined([_spearman(w[i], align[i]) for i in range(len(rows))])
    return out


def _mean_defined(values: list[float]) -> float:
    """The mean of the defined (non-NaN) values; NaN when none is."""
    return float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else float("nan")


def run_stats(rows: list[dict], domains: list[str]) -> dict[str, float]:
    """Level 0 (embeddings) and the top level (the last student layer), the latter prefixed top_."""
    rows = _weighted_rows(rows)
    if not rows:
        return {}
    top = len(rows[0]["weights"]) - 1
    return {**weight_stats(rows, domains, 0), **{f"top_{k}": v for k, v in weight_stats(rows, domains, top).items()}}


def summarize_run(run_dir: str | Path) -> dict[str, Any] | None:
    """The student stage's weight statistics of one trainer run directory; None when it logged no
    weights (kd, none) or its files are missing or unreadable."""
    run_dir = Path(run_dir)
    try:
        domains = json.loads((run_dir / "labels.json").read_text())["domains"]
        rows = MetricsLog(run_dir / "metrics.jsonl", enabled=False).rows("student")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # AttributeError: a line that is no object
        return None
    try:
        stats = run_stats(rows, list(domains))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if "entropy" not in stats:
        return None
    # NaN (a correlation with constant weights) is not JSON: None says "undefined"
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in stats.items()}
    return {"domains": list(domains), "logged_steps": len(_weighted_rows(rows)), **clean}  # SUMMARY_META first


def mean_over_runs(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per statistic, the mean over the runs that define it; n = runs."""
    keys = [k for k in summaries[0] if k not in SUMMARY_META] if summaries else []
    out: dict[str, Any] = {"n": len(summaries)}
    for k in keys:
        vals = [s[k] for s in summaries if isinstance(s.get(k), (int, float))]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def slice_weights(by_method: dict[str, dict[int, Any]], methods: list[str], domains: list[str],
                  split: str) -> dict[str, dict[str, Any]]:
    """A report slice's weight table: per method whose runs (analysis/cells.Cell, by seed) logged
    weights, the mean of each statistic over its seeds, and where the top level's weight went."""
    out = {}
    for m in methods:
        runs = [w for _, c in sorted(by_method[m].items()) if (w := c.domain_weights()) is not None]
        if runs:
            mean = mean_over_runs(runs)
            out[m] = {**mean, **_where_weight_went(mean, by_method, m, domains, split)}
    return out


def _where_weight_went(w: dict[str, Any], by_method: dict[str, dict[int, Any]], m: str, domains: list[str],
                       split: str) -> dict[str, Any]:
    """The top level's heaviest domain (mean weight over seeds, when the weights left 1/K) and the
    method's accuracy on it minus kd's, paired by seed, in points: did the weight go where it helps?"""
    weights = {d: w.get(f"top_{MEAN_WEIGHT}{d}") for d in domains}
    if None in weights.values() or max(weights.values()) - 1 / len(domains) < _TIE:
        return {}
    d = max(weights, key=weights.get)
    out: dict[str, Any] = {"top_heaviest": d, "top_heaviest_weight": weights[d]}
    kd = by_method.get("kd", {})
    diffs = []
    for seed, run in by_method[m].items():
        if seed in kd:
            a, b = (r.results["student"].get(split, {}).get(d) for r in (run, kd[seed]))
            if a is not None and b is not None:
                diffs.append(a - b)
    if diffs:
        out["top_heaviest_vs_kd"] = 100 * float(np.mean(diffs))
    return out
