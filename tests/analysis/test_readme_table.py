"""The README's hrkd-vs-kd and graph-ablation tables are the report's: the committed README equals
what tools/reproduce.py --report writes from the committed docs/results/summary.json, and the
rendering says what a constructed slice holds (v2 interval first, seeds, labels, duplicates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrkd_ds.analysis.readme_table import BLOCKS, current_block, markers, render_block, update_readme

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_readme_shows_the_committed_report():
    summary = json.loads((REPO / "docs" / "results" / "summary.json").read_text())
    readme = (REPO / "README.md").read_text()
    for name in BLOCKS:  # on failure: python3 tools/reproduce.py --report rewrites the blocks
        assert current_block(readme, name) == render_block(name, summary["slices"], summary.get("choices", [])), name


def _interval(lo, hi):
    return {"diff": (lo + hi) / 2, "lo": lo, "hi": hi}


def _slice(key, n_kd=5):
    dataset, fraction, student = key
    acc = lambda m, s: {"average": {"mean": m, "std": s, "n": 5}}  # noqa: E731
    rows = [{"model": "teacher", "n": 1, "seeds": [1], "test": acc(0.9, None)},
            {"model": "none", "n": 5, "seeds": [1, 2, 3, 4, 5], "test": acc(0.80, 0.01), "test_dedup": acc(0.79, 0.01)["average"]},
            {"model": "kd", "n": n_kd, "seeds": list(range(1, n_kd + 1)), "test": acc(0.83, 0.02),
             "test_dedup": acc(0.825, 0.02)["average"]},
            {"model": "hrkd", "n": 5, "seeds": [1, 2, 3, 4, 5], "test": acc(0.82, 0.02), "test_dedup": acc(0.815, 0.02)["average"]}]
    comparisons = [
        {"a": "hrkd", "b": "kd", "seeds": list(range(1, n_kd + 1)), "n": n_kd, "bootstrap": _interval(-0.02, 0.0),
         "hierarchical": _interval(-0.03, 0.01), "registration": {"status": "pre-registered", "rule": "r", "date": "d"}},
        {"a": "kd", "b": "none", "seeds": list(range(1, n_kd + 1)), "n": n_kd, "bootstrap": _interval(0.02, 0.04),
         "hierarchical": _interval(0.01, 0.05), "registration": {"status": "earlier protocol"}},
    ]
    return {"dataset": dataset, "fraction": fraction, "student": student, "rows": rows, "comparisons": comparisons,
            "duplicates": {"removed": 3, "of": 800}, "degenerate": [{"method": "kd", "seed": 2, "domain": "dvd"},
                                                                     {"method": "kd", "seed": 2, "domain": "books"}],
            "compression": [{"method": "kd", "retained_pct": 92.2}]}


def test_a_constructed_slice_reads_v2_first_with_its_labels():
    block = render_block("hrkd-vs-kd", [_slice(("amazon", 0.1, "L3")), _slice(("mnli", 0.1, "L3"), n_kd=3)])
    lines = block.splitlines()
    assert lines[0] == markers("hrkd-vs-kd")[0] and lines[-1] == markers("hrkd-vs-kd")[1]
    assert "| `kd` (TinyBERT-KD) | 83.00 ± 2.00 (5) ⚑1 | 83.00 ± 2.00 (3) ⚑1 |" in lines  # one run flagged, counted once
    assert "| `kd`, % of the teacher | 92.2% | 92.2% |" in lines
    # the v2 interval includes 0: plain; v2 first, then n, then the labelled example-only interval
    assert ("| Amazon 10%, `L3` | hrkd − kd | −1.00 | [−3.00, +1.00] | 5 | [−2.00, +0.00] | yes (r, d) | "
            "−1.00 (3 of 800 removed) |") in lines
    # excludes 0: bold; not registered: said so
    assert "| Amazon 10%, `L3` | kd − none | **+3.00** | **[+1.00, +5.00]** | 5 | [+2.00, +4.00] | no (earlier protocol) |" \
        in " ".join(lines)
    # kd has 3 seeds, none 5: the rows' duplicate-free means are not the paired Δ, so none is shown
    assert any(line.startswith("| MNLI 10%, `L3` | kd − none |") and line.endswith("| – |") for line in lines)
    assert "Not in the report yet: Amazon 100%, `L3`, Amazon 100%, `L4H192sel`, Amazon 10%, `L4H192sel`, " \
           "MNLI 10%, `L4H192sel`." in lines


def test_update_needs_exactly_one_block_of_each():
    slices = [_slice(("amazon", 0.1, "L4H192sel"))]
    text = "intro\n" + "\n".join(f"{b}\nold\n{e}" for b, e in map(markers, BLOCKS)) + "\noutro\n"
    new = update_readme(text, slices)
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "\nold\n" not in new
    assert update_readme(new, slices) == new
    with pytest.raises(ValueError, match="one generated block"):
        update_readme("no markers here", slices)
    with pytest.raises(ValueError, match="one generated block"):
        update_readme(text + text, slices)


def _choice(method, done=42):
    return {"rule": "v2-recipes", "method": method, "done": done, "needed": 42}


def test_the_fine_tuning_block_reads_the_recipe_chosen_on_dev_and_waits_without_one():
    sl = _slice(("amazon", 0.1, "L4H192sel"))
    sl["rows"].append({**sl["rows"][2], "model": "logit-kd-aug"})  # kd's accuracies under the chosen name
    sl["comparisons"].append({**sl["comparisons"][1], "a": "logit-kd-aug",  # logit-kd-aug - none
                              "registration": {"status": "pre-registered", "rule": "r", "date": "d",
                                               "selected": {"rule": "r", "method": "logit-kd-aug", "selection_seeds": [1, 2, 3]}}})
    waiting = render_block("distill-vs-finetune", [sl], [_choice(None, done=41)])
    assert "The pre-registered rule v2-recipes has not chosen a recipe yet (41 of 42 selection cells finished)." in waiting
    assert "logit-kd-aug" not in waiting and "| `kd` | 83.00 ± 2.00 (5) ⚑1 |" in waiting  # one slice: a row per model
    chosen = render_block("distill-vs-finetune", [sl], [_choice("logit-kd-aug")])
    assert chosen.splitlines()[2].startswith("`logit-kd-aug`: the recipe the pre-registered rule v2-recipes chose on dev")
    assert "| `logit-kd-aug` | 83.00 ± 2.00 (5) |" in chosen  # its own row (no run of it flagged)
    assert "| Amazon 10%, `L4H192sel` | logit-kd-aug − none | **+3.00** |" in chosen
    assert "| yes (r, d; seeds 1, 2, 3 are the choice's selection cells) |" in chosen  # not independent of the choice
    assert "| Amazon 10%, `L4H192sel` | logit-kd-aug − kd | – | no paired runs |" in chosen  # rows, but no comparison
    assert "Not in the report yet: Amazon 100%, `L3`, Amazon 100%, `L4H192sel`, MNLI 10%, `L4H192sel`." in chosen
    no_kd = {**sl, "rows": [r for r in sl["rows"] if r["model"] != "kd"]}
    chosen = render_block("distill-vs-finetune", [no_kd], [_choice("logit-kd-aug")])
    assert "No runs yet of both sides: logit-kd-aug − kd at Amazon 10%, `L4H192sel`." in chosen
    assert "logit-kd-aug − kd |" not in chosen
