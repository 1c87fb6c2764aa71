"""The reproduction grid: cells from the spec, prerequisites, selection, and what counts as finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hrkd_ds.analysis.grid import expand, load_spec, run_order, select
from hrkd_ds.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SPEC = load_spec(REPO / "configs" / "reproduce" / "grid.yaml")


def test_cells_are_unique_ordered_and_need_their_teacher_and_general_stage():
    cells = expand(SPEC, REPO)
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    pos = {cid: i for i, cid in enumerate(ids)}
    for c in cells:
        for need in c.needs:
            assert pos[need] < pos[c.id], (need, c.id)  # a prerequisite always runs first
    student = next(c for c in cells if c.id == "amazon/f0.1/L4H192/hrkd/s1")
    assert student.needs == ["amazon/f0.1/teacher", "amazon/f0.1/general-L4H192"]
    assert "student.pretrained=<root>/amazon/f0.1/general-L4H192/general/model" in student.overrides
    assert student.meta == {"dataset": "amazon", "fraction": 0.1, "method": "hrkd", "seed": 1, "student": "L4H192",
                            "teacher": "amazon/f0.1/teacher"}
    selected = next(c for c in cells if c.id == "amazon/f0.1/L4H192sel/kd/s2")
    assert selected.needs == ["amazon/f0.1/teacher"] and "student.init=teacher_select" in selected.overrides
    # the first phase is Amazon 10% with the selected narrow student: its teacher, then three methods
    assert ids[:4] == ["amazon/f0.1/teacher"] + [f"amazon/f0.1/L4H192sel/{m}/s1" for m in ("none", "kd", "hrkd")]
    # every slice the goal needs has three seeds of none, kd and hrkd
    for sl in ("amazon/f1.0/L3", "amazon/f0.1/L3", "mnli/f0.1/L3", "amazon/f1.0/L4H192sel", "amazon/f0.1/L4H192sel",
               "mnli/f0.1/L4H192sel"):
        assert all(f"{sl}/{m}/s{s}" in pos for m in ("none", "kd", "hrkd") for s in (1, 2, 3)), sl


def test_reference_method_takes_the_reference_config_settings():
    cell = next(c for c in expand(SPEC, REPO) if c.id.endswith("/reference/s1"))
    for setting in ("distill.attention=scores", "graph.trainable=False", "graph.mask_padding=False"):
        assert setting in cell.overrides
    assert not any(o.startswith("output_dir=") for o in cell.overrides)


def test_select_and_seeds_pull_in_prerequisites():
    cells = select(expand(SPEC, REPO, seeds=[1]), ["amazon/*/L4H192/kd/*"])
    assert [c.id for c in cells] == ["amazon/f0.1/teacher", "amazon/f0.1/general-L4H192", "amazon/f0.1/L4H192/kd/s1"]


def _finish(root: Path, cell, role: str, results: dict | None) -> None:
    run = cell.run_dir(root)
    (run / role).mkdir(parents=True)
    (run / role / "DONE").write_text("ok\n")
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))


def test_finished_means_done_marker_and_results_entry(tmp_path):
    cells = {c.id: c for c in expand(SPEC, REPO)}
    teacher, student = cells["amazon/f1.0/teacher"], cells["amazon/f1.0/L3/kd/s1"]
    assert not teacher.finished(tmp_path)
    _finish(tmp_path, teacher, "teacher", {"teacher": {}})
    assert teacher.finished(tmp_path)
    _finish(tmp_path, student, "student", {"teacher": {}})  # DONE but no student results: not finished
    assert not student.finished(tmp_path)
    (student.run_dir(tmp_path) / "results.json").write_text(json.dumps({"student": {}}))
    assert student.finished(tmp_path)
    cmd = student.command(tmp_path, "python", "hrkd_ds/train.py")
    assert f"teacher_from={tmp_path}/amazon/f1.0/teacher" in cmd and "stages=[distill]" in cmd


def test_run_order_puts_a_teacher_just_before_its_first_pending_user():
    cells = expand(SPEC, REPO)
    # what the archive held at the end of 12-02: the first five phases
    archived = ({f"{sl}/{m}/s{s}" for sl in ("amazon/f0.1/L4H192sel", "mnli/f0.1/L4H192sel")
                 for m in ("none", "kd", "hrkd") for s in (1, 2, 3)}
                | {f"amazon/f0.1/L4H192/{m}/s1" for m in ("none", "kd", "hrkd")})
    ids = [c.id for c in run_order(cells, lambda c: c.id in archived)]
    assert sorted(ids) == sorted(c.id for c in cells)
    pos = {cid: i for i, cid in enumerate(ids)}
    for c in cells:
        for need in c.needs:
            assert pos[need] < pos[c.id], (need, c.id)
    # the Amazon 10% teacher waits for the first Amazon 10% student still to run (the general stage
    # of that student in between), which comes after the Amazon 100% slice: the first graph ablation
    by_id = {c.id: c for c in cells}
    first_user = ids[min(pos[c.id] for c in cells if "amazon/f0.1/teacher" in c.needs and c.id not in archived)]
    between = ids[pos["amazon/f0.1/teacher"] + 1:pos[first_user]]
    assert set(between) <= set(by_id[first_user].needs), between
    assert first_user == "amazon/f0.1/L4H192sel/hrkd-nodrop/s1"
    assert pos["amazon/f1.0/L4H192sel/hrkd/s3"] < pos["amazon/f0.1/teacher"]
    assert pos["amazon/f0.1/general-L4H192"] > pos["amazon/f0.1/teacher"]  # its users are done: last
    pending = [cid for cid in ids if cid not in archived]
    assert pending[:2] == ["amazon/f1.0/teacher", "amazon/f1.0/L4H192sel/none/s1"]
    # nothing done: the phase order itself
    assert [c.id for c in run_order(cells, lambda c: False)][:4] == [c.id for c in cells][:4]


def test_a_phase_naming_what_the_spec_lacks_is_a_user_error(tmp_path):
    for key, bad in (("students", "L9"), ("methods", "hrkd-typo"), ("fractions", "0.5")):
        spec = yaml.safe_load((REPO / "configs" / "reproduce" / "grid.yaml").read_text())
        spec["phases"][0][key] = [bad]
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(UserError, match=rf"phases\[0\]\.{key} names '{bad}'"):
            load_spec(path)
