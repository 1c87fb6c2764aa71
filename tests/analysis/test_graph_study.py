"""The domain-weight statistics (graph study and grid report) on constructed logs with known answers."""

from __future__ import annotations

import json
import math

import pytest

from hrkd_ds.analysis.domain_weights import run_stats, summarize_run

DOMAINS = ["a", "b", "c"]


def _row(weights: list[list[float]], emb: list[float], layer: list[float]) -> dict:
    terms = {"emb": dict(zip(DOMAINS, emb)), "att": [dict(zip(DOMAINS, layer))], "hid": [dict(zip(DOMAINS, [0.0] * 3))]}
    return {"stage": "student", "weights": weights, "terms": terms}


def test_uniform_weights():
    u = [1 / 3] * 3
    rows = [_row([u, u], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) for _ in range(4)]
    stats = run_stats(rows, DOMAINS)
    assert stats["jump"] == 0 and stats["entropy"] == pytest.approx(1.0) and stats["max_weight"] == pytest.approx(1 / 3)
    assert stats["top_entropy"] == pytest.approx(1.0)
    # uniform weights pick no domain and rank no domain above another: both measures undefined, not
    # the share of steps where the first domain happens to be the easiest
    assert math.isnan(stats["easiest"]) and math.isnan(stats["corr"]) and math.isnan(stats["top_easiest"])


def test_steps_with_a_shared_largest_weight_count_in_neither_part_of_easiest():
    rows = [_row([[0.4, 0.4, 0.2], [0.6, 0.2, 0.2]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),  # level 0: tie a/b
            _row([[0.2, 0.5, 0.3], [0.2, 0.2, 0.6]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),  # b, not the easiest a
            _row([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])]  # a: the easiest
    stats = run_stats(rows, DOMAINS)
    assert stats["easiest"] == pytest.approx(0.5) and stats["top_easiest"] == pytest.approx(2 / 3)


def test_top_level_collapse_onto_the_easiest_domain_of_its_own_loss():
    u = [1 / 3] * 3
    rows = [_row([u, [0.0, 0.0, 1.0]], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]),  # top loss: c easiest
            _row([u, [1.0, 0.0, 0.0]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])]  # top loss: a easiest
    stats = run_stats(rows, DOMAINS)
    assert stats["top_easiest"] == 1.0 and stats["top_max_weight"] == 1.0
    assert stats["top_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["top_jump"] == pytest.approx(2 / 3)  # mean |delta| over the 3 domains
    assert stats["top_corr"] < 0 and stats["entropy"] == pytest.approx(1.0)


def test_align_corr_follows_the_logged_alignment_and_only_meta_runs_have_it():
    """A meta run logs A (G, K): weights ranked as A give +1, against it -1; runs without A have no key."""
    rows = [_row([[0.2, 0.3, 0.5], [0.5, 0.3, 0.2]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) for _ in range(3)]
    for r in rows:
        r["alignment"] = [[-1.0, 0.0, 2.0], [-1.0, 0.0, 2.0]]
    stats = run_stats(rows, DOMAINS)
    assert stats["align_corr"] == pytest.approx(1.0) and stats["top_align_corr"] == pytest.approx(-1.0)
    for r in rows:
        del r["alignment"]
    assert "align_corr" not in run_stats(rows, DOMAINS)


def test_summarize_run_reads_the_student_stage_only_and_none_without_weights(tmp_path):
    u = [1 / 3] * 3
    student = [_row([u, [0.0, 0.0, 1.0]], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) for _ in range(3)]
    teacher = {**_row([[1.0, 0.0, 0.0]] * 2, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), "stage": "teacher"}
    (tmp_path / "labels.json").write_text(json.dumps({"domains": DOMAINS}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [teacher, *student]) + "\n")
    s = summarize_run(tmp_path)
    assert s["logged_steps"] == 3 and s["domains"] == DOMAINS
    assert s["entropy"] == pytest.approx(1.0) and s["top_max_weight"] == 1.0 and s["top_jump"] == 0.0
    # a kd run logs no weights; a run without its files has nothing to say
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"stage": "student", "terms": {"emb": {}}}) + "\n")
    assert summarize_run(tmp_path) is None
    assert summarize_run(tmp_path / "absent") is None


def test_the_report_shows_the_alignment_columns_only_when_a_run_logged_a():
    from hrkd_ds.analysis.results_render import render_domain_weights

    plain = {"hrkd": {"n": 2, "entropy": 1.0, "top_entropy": 0.9}}
    assert "r ~ A" not in "\n".join(render_domain_weights(plain))
    meta = {**plain, "hrkd-meta": {"n": 2, "entropy": 0.8, "align_corr": 0.5, "top_align_corr": 0.25}}
    table = render_domain_weights(meta)
    assert "| top: r ~ A |" in table[2] and table[-1].endswith("| 0.5000 | 0.2500 |") and table[-2].endswith("| – | – |")


def test_mean_weight_per_domain_and_where_the_weight_went():
    """Each domain's mean weight per level; the report names the heaviest top-level domain and the
    method's accuracy there minus kd's, paired by seed, and says nothing when the weights stay 1/K."""
    from hrkd_ds.analysis.domain_weights import slice_weights

    rows = [_row([[1 / 3] * 3, [0.2, 0.2, 0.6]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
            _row([[1 / 3] * 3, [0.4, 0.2, 0.4]], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])]
    stats = run_stats(rows, DOMAINS)
    assert [stats[f"top_mean_weight_{d}"] for d in DOMAINS] == pytest.approx([0.3, 0.2, 0.5])
    assert stats["mean_weight_a"] == pytest.approx(1 / 3)

    class Run:
        def __init__(self, weights, acc_c):
            self.weights, self.results = weights, {"student": {"test": {"a": 0.5, "b": 0.5, "c": acc_c}}}

        def domain_weights(self):
            return self.weights

    uniform = {k: v for k, v in stats.items() if not k.startswith("top_mean")} | {f"top_mean_weight_{d}": 1 / 3 for d in DOMAINS}
    by_method = {"kd": {1: Run(None, 0.60), 2: Run(None, 0.70)},
                 "hrkd": {1: Run(stats, 0.65), 2: Run(stats, 0.80)},  # on c: +5 and +10 points
                 "flat": {1: Run(uniform, 0.9)}}
    out = slice_weights(by_method, ["kd", "hrkd", "flat"], DOMAINS, "test")
    assert list(out) == ["hrkd", "flat"]
    assert out["hrkd"]["top_heaviest"] == "c" and out["hrkd"]["top_heaviest_weight"] == pytest.approx(0.5)
    assert out["hrkd"]["top_heaviest_vs_kd"] == pytest.approx(7.5)
    assert "top_heaviest" not in out["flat"]
    from hrkd_ds.analysis.results_render import render_domain_weights

    lines = render_domain_weights(out)
    assert lines[2].endswith("| top: heaviest (weight) | its accuracy − kd |")
    assert lines[4].startswith("| hrkd (n=2) |") and lines[4].endswith("| c (0.500) | +7.50 |")
    assert lines[5].endswith("| – | – |")
