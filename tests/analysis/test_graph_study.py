"""tools/graph_study.py's weight statistics on constructed logs with known answers."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

STUDY = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tools" / "graph_study.py"), run_name="graph_study")
DOMAINS = ["a", "b", "c"]


def _row(weights: list[list[float]], emb: list[float], layer: list[float]) -> dict:
    terms = {"emb": dict(zip(DOMAINS, emb)), "att": [dict(zip(DOMAINS, layer))], "hid": [dict(zip(DOMAINS, [0.0] * 3))]}
    return {"stage": "student", "weights": weights, "terms": terms}


def test_uniform_weights():
    u = [1 / 3] * 3
    rows = [_row([u, u], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) for _ in range(4)]
    stats = STUDY["run_stats"](rows, DOMAINS)
    assert stats["jump"] == 0 and stats["entropy"] == pytest.approx(1.0) and stats["max_weight"] == pytest.approx(1 / 3)
    assert stats["top_entropy"] == pytest.approx(1.0)


def test_top_level_collapse_onto_the_easiest_domain_of_its_own_loss():
    u = [1 / 3] * 3
    rows = [_row([u, [0.0, 0.0, 1.0]], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]),  # top loss: c easiest
            _row([u, [1.0, 0.0, 0.0]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])]  # top loss: a easiest
    stats = STUDY["run_stats"](rows, DOMAINS)
    assert stats["top_easiest"] == 1.0 and stats["top_max_weight"] == 1.0
    assert stats["top_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["top_jump"] == pytest.approx(2 / 3)  # mean |delta| over the 3 domains
    assert stats["top_corr"] < 0 and stats["entropy"] == pytest.approx(1.0)
