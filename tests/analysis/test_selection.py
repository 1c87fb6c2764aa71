"""The pre-registered dev-only choice (analysis/selection.py) and the grid phase that runs it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from grid_fakes import finish
from hrkd_ds.analysis.cells import scan_grids
from hrkd_ds.analysis.grid import GridCell, check_phases, expand, load_spec
from hrkd_ds.analysis.grid_progress import Progress
from hrkd_ds.analysis.grid_schedule import run_planned
from hrkd_ds.analysis.protocol import registered_phases, registration
from hrkd_ds.analysis.results_render import render_choices
from hrkd_ds.analysis.selection import choice_lines, choice_summary, decide, dev_of_cells, resolve
from hrkd_ds.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SPEC = load_spec(REPO / "configs" / "reproduce" / "grid.yaml")
CHOOSE = {"datasets": ["amazon"], "fractions": ["0.1"], "students": ["A", "B"], "seeds": [1, 2],
          "candidates": ["kd", "cheap", "dear"], "tie_pts": 0.2, "cost": {"kd": 1.0, "cheap": 0.5, "dear": 5.0}}


def devs(table: dict[str, list[float]]) -> dict[str, float]:
    """candidate -> its four dev accuracies (A s1, A s2, B s1, B s2), as cell id -> dev."""
    ids = [f"amazon/f0.1/{st}/{{m}}/s{s}" for st in ("A", "B") for s in (1, 2)]
    return {i.format(m=m): v for m, vals in table.items() for i, v in zip(ids, vals)}


def test_the_highest_mean_dev_wins_and_a_missing_cell_leaves_it_undecided():
    table = {"kd": [0.70, 0.72, 0.80, 0.82], "cheap": [0.60] * 4, "dear": [0.74, 0.76, 0.84, 0.86]}
    d = decide(CHOOSE, devs(table).get)
    assert d["method"] == "dear" and d["done"] == d["needed"] == 12
    assert d["means"]["dear"] == pytest.approx(0.80)
    partial = devs(table)
    del partial["amazon/f0.1/B/cheap/s2"]
    d = decide(CHOOSE, partial.get)
    assert d["method"] is None and d["done"] == 11


def test_within_the_tie_margin_the_cheaper_wins_and_beyond_it_the_better():
    # dear leads kd by 0.15 pts (within 0.2): kd costs less; by 0.25 pts: dear
    for lead, chosen in ((0.0015, "kd"), (0.0025, "dear")):
        table = {"kd": [0.75] * 4, "cheap": [0.70] * 4, "dear": [0.75 + lead] * 4}
        assert decide(CHOOSE, devs(table).get)["method"] == chosen
    # equal cost: the higher mean
    equal = {**CHOOSE, "cost": {"kd": 1.0, "cheap": 1.0, "dear": 5.0}}
    table = {"kd": [0.750] * 4, "cheap": [0.751] * 4, "dear": [0.70] * 4}
    assert decide(equal, devs(table).get)["method"] == "cheap"


def _spec_with_choice() -> dict:
    spec = copy.deepcopy(SPEC)
    spec["preregistration"]["r"] = {"seeds": 2, "choose": {**CHOOSE, "students": ["L3"], "candidates": ["kd", "logit-kd"],
                                                           "cost": {"kd": 1.0, "logit-kd": 1.0}}}
    spec["phases"] = [
        {"datasets": ["amazon"], "fractions": ["0.1"], "students": ["L3"], "methods": ["kd", "logit-kd"], "seeds": [1, 2]},
        {"datasets": ["amazon"], "fractions": ["1.0"], "students": ["L3"], "methods": ["none", {"selected": "r"}],
         "seeds": [1], "registered": {"date": "2026-12-07", "compare": ["best - none", "best - kd"], "rule": "r"}},
        {"datasets": ["mnli"], "fractions": ["0.1"], "students": ["L3"], "methods": ["none"], "seeds": [1]},
    ]
    check_phases(spec, "test")
    return spec


def test_a_selected_phase_waits_then_runs_the_chosen_method_under_its_name():
    spec = _spec_with_choice()
    chosen, waiting = resolve(spec, {}.get)
    assert [p["datasets"] for p in chosen["phases"]] == [["amazon"], ["mnli"]]
    assert waiting == ["phases[1] waits for the r choice: 0 of 4 cells finished"] and choice_lines(spec, {}.get) == []
    assert registered_phases(spec) == []  # unresolved: nothing to read yet
    table = {f"amazon/f0.1/L3/{m}/s{s}": v for (m, v) in (("kd", 0.7), ("logit-kd", 0.8)) for s in (1, 2)}
    chosen, waiting = resolve(spec, table.get)
    assert waiting == [] and spec["phases"][1]["methods"][1] == {"selected": "r"}  # the spec given is unchanged
    assert choice_lines(spec, table.get) == ["r chose logit-kd on dev (mean dev % over 4 cells: logit-kd 80.00, kd 70.00)"]
    ids = {c.id for c in expand(chosen, REPO)}
    assert {"amazon/f1.0/L3/logit-kd/s1", "amazon/f1.0/L3/none/s1"} <= ids
    (ph,) = registered_phases(chosen)
    assert ph["compare"] == [("logit-kd", "none"), ("logit-kd", "kd")]
    assert ph["selected"] == {"rule": "r", "method": "logit-kd", "read": ["amazon/f0.1/L3/logit-kd/s1", "amazon/f0.1/L3/logit-kd/s2"]}
    # the choice read Amazon 10%'s cells, this phase runs Amazon 100%: none of its seeds was a selection cell
    finished = {(m, s) for m in ("logit-kd", "none", "kd") for s in (1,)}
    assert registration([ph], ("amazon", 1.0, "L3"), "logit-kd", "none", finished, 1)["selected"]["selection_seeds"] == []
    here = {**ph, "fractions": [0.1], "seeds": [1, 2, 3]}  # the same phase on the selection's own slice
    finished = {(m, s) for m in ("logit-kd", "none", "kd") for s in (1, 2, 3)}
    reg = registration([here], ("amazon", 0.1, "L3"), "logit-kd", "none", finished, 3)
    assert reg["selected"] == {"rule": "r", "method": "logit-kd", "selection_seeds": [1, 2]}
    # kd chosen: its comparison with itself is dropped
    table.update({f"amazon/f0.1/L3/logit-kd/s{s}": 0.6 for s in (1, 2)})
    (ph,) = registered_phases(resolve(spec, table.get)[0])
    assert ph["compare"] == [("kd", "none")]


def test_the_report_records_what_each_choice_read_per_student_and_marks_the_chosen_one():
    spec = _spec_with_choice()
    spec["preregistration"]["r"]["choose"]["students"] = ["L3", "L4H192sel"]
    table = {f"amazon/f0.1/{st}/{m}/s{s}": v for (st, m, v) in (("L3", "kd", 0.80), ("L4H192sel", "kd", 0.70),
                                                                ("L3", "logit-kd", 0.78), ("L4H192sel", "logit-kd", 0.76))
             for s in (1, 2)}
    partial = {k: v for k, v in table.items() if k != "amazon/f0.1/L3/logit-kd/s2"}
    rule_r = lambda summary: [c for c in summary if c["rule"] == "r"]  # noqa: E731 (the real spec's rules are there too)
    (waiting,) = rule_r(choice_summary(spec, partial.get))
    assert waiting["method"] is None and (waiting["done"], waiting["needed"]) == (7, 8)
    (ch,) = rule_r(choice_summary(spec, table.get))
    assert ch["method"] == "logit-kd" and ch["rule"] == "r" and ch["students"] == ["L3", "L4H192sel"]
    by = {c["method"]: c for c in ch["candidates"]}
    assert by["logit-kd"]["mean"] == pytest.approx(0.77) and by["kd"]["mean"] == pytest.approx(0.75)
    assert by["kd"]["by_student"] == pytest.approx({"L3": 0.80, "L4H192sel": 0.70})
    lines = render_choices([ch])
    assert "**r** (amazon 0.1; students L3, L4H192sel; seeds 1, 2; ties within 0.2 pts): chose `logit-kd`." in lines
    rows = [line for line in lines if line.startswith("| ") and "candidate" not in line]
    assert rows == ["| **`logit-kd`** | 78.00 | 76.00 | 77.00 | 4 of 4 | 1 |", "| `kd` | 80.00 | 70.00 | 75.00 | 4 of 4 | 1 |"]
    text = "\n".join(render_choices([waiting]))
    assert "not made yet: 7 of 8 cells finished" in text and "| `logit-kd` | 78.00 | 76.00 | 76.67 | 3 of 4 | 1 |" in text


def test_a_choice_no_phase_runs_is_still_checked_and_recorded():
    spec = _spec_with_choice()
    spec["preregistration"]["q"] = {"choose": {**CHOOSE, "students": ["L3"], "candidates": ["kd", "none"],
                                               "cost": {"kd": 1.0, "none": 0.5}}}
    check_phases(spec, "test")
    table = {f"amazon/f0.1/L3/{m}/s{s}": v for (m, v) in (("kd", 0.7), ("none", 0.8)) for s in (1, 2)}
    assert [c["rule"] for c in choice_summary(spec, table.get)] == ["r", "v2-recipes", "v2-schedule", "v2-mix", "q"]  # phases' first
    assert [c["method"] for c in choice_summary(spec, table.get) if c["rule"] == "q"] == ["none"]
    del spec["preregistration"]["q"]["choose"]["cost"]["none"]
    with pytest.raises(UserError, match="preregistration.q: preregistration.q.choose.cost has no number for none"):
        check_phases(spec, "test")


@pytest.mark.parametrize("edit, says", [
    (lambda s: s["phases"][1]["methods"].append({"selected": "r"}), "2 'selected' entries"),
    (lambda s: s["phases"][1]["methods"].__setitem__(1, {"selected": "nope"}), "needs preregistration.nope.choose"),
    (lambda s: s["preregistration"]["r"]["choose"]["candidates"].append("nope"), "names 'nope'"),
    (lambda s: s["preregistration"]["r"]["choose"]["cost"].pop("kd"), "cost has no number for kd"),
])
def test_a_malformed_choice_is_a_user_error_naming_the_field(edit, says):
    spec = _spec_with_choice()
    edit(spec)
    with pytest.raises(UserError, match=says):
        check_phases(spec, "test")


def test_the_grid_is_planned_again_once_the_choice_is_made_and_runs_it_in_phase_order(tmp_path):
    """A fake runner finishes cells with constructed dev accuracies; the chosen phase's cells run
    before the phase after it, in the same call."""
    spec, root, archive, ran = _spec_with_choice(), tmp_path / "grid", tmp_path / "archive", []
    dev = {"kd": 0.7, "logit-kd": 0.8}

    def plan():
        chosen, waiting = resolve(spec, dev_of_cells(scan_grids([root, archive])[0]))
        return Progress(expand(chosen, REPO), root, archive), waiting

    def run_cell(cell: GridCell) -> int:
        ran.append(cell.id)
        finish(root, cell)
        if cell.stage == "distill":  # finish() writes a test average only: add the dev one
            res = json.loads((cell.run_dir(root) / "results.json").read_text())
            res["student"]["dev"] = {"average": dev.get(cell.meta["method"], 0.5)}
            (cell.run_dir(root) / "results.json").write_text(json.dumps(res))
        return 0

    lines: list[str] = []
    assert run_planned(plan, run_cell, say=lines.append) == 0
    students = [c for c in ran if "teacher" not in c]
    assert students == ["amazon/f0.1/L3/kd/s1", "amazon/f0.1/L3/kd/s2", "amazon/f0.1/L3/logit-kd/s1",
                        "amazon/f0.1/L3/logit-kd/s2", "amazon/f1.0/L3/none/s1", "amazon/f1.0/L3/logit-kd/s1",
                        "mnli/f0.1/L3/none/s1"]
    assert any(l.startswith("[wait] phases[1]") for l in lines) and any(l.startswith("[plan]") for l in lines)
