"""Each cell's state (done, archived, unneeded, ready, waiting) from constructed grids on disk,
and `--list`'s lines: the same reading the run loop takes its decisions from."""

from __future__ import annotations

from grid_fakes import GENERAL, TEACHER, archive, finish, general, student, teacher

from hrkd_ds.analysis.grid_progress import Progress


def _progress(tmp_path, cells):
    return Progress(cells, tmp_path / "grid", tmp_path / "archive")


def _states(progress):
    return {c.id: progress.state(c) for c in progress.cells}


def test_nothing_run_the_teacher_is_ready_and_its_users_wait(tmp_path):
    kd, hrkd = student("kd"), student("hrkd")
    p = _progress(tmp_path, [teacher(), kd, hrkd])
    assert _states(p) == {TEACHER: "ready", kd.id: "waiting", hrkd.id: "waiting"}
    assert p.waits_for(kd) == [TEACHER]


def test_a_finished_teacher_makes_its_users_ready(tmp_path):
    t, kd = teacher(), student("kd")
    p = _progress(tmp_path, [t, kd])
    finish(p.root, t)
    assert _states(p) == {TEACHER: "done", kd.id: "ready"}
    assert p.waits_for(kd) == []


def test_finished_here_is_done_recorded_in_the_archive_is_archived(tmp_path):
    t, kd, hrkd = teacher(), student("kd"), student("hrkd")
    p = _progress(tmp_path, [t, kd, hrkd])
    finish(p.root, t)
    finish(p.root, kd)
    archive(p.archive, hrkd)
    assert _states(p) == {TEACHER: "done", kd.id: "done", hrkd.id: "archived"}
    assert all(p.done(c) for c in p.cells)


def test_a_teacher_is_wanted_only_while_one_of_its_users_is_pending(tmp_path):
    t, kd, hrkd = teacher(), student("kd"), student("hrkd")
    p = _progress(tmp_path, [t, kd, hrkd])
    archive(p.archive, kd)
    assert p.wanted(t) and p.state(t) == "ready"  # hrkd still needs it
    archive(p.archive, hrkd)
    assert not p.wanted(t) and p.state(t) == "unneeded"  # every user archived: nothing would load it
    assert not p.done(t)  # unneeded is not done: a later user added to the grid makes it wanted again
    assert _progress(tmp_path, [t, kd, hrkd, student("none")]).state(t) == "ready"


def test_a_teacher_or_general_stage_named_alone_is_wanted(tmp_path):
    p = _progress(tmp_path, [teacher(), general()])  # e.g. --only 'amazon/f1.0/teacher': no user selected
    assert _states(p) == {TEACHER: "ready", GENERAL: "ready"}


def test_an_archived_record_of_a_teacher_does_not_count(tmp_path):
    """Teachers and general stages are models later cells load: only the live grid can hold them."""
    t, kd = teacher(), student("kd")
    p = _progress(tmp_path, [t, kd])
    archive(p.archive, t)
    assert p.state(t) == "ready" and p.state(kd) == "waiting"


def test_a_student_waits_for_each_prerequisite_not_finished_here(tmp_path):
    t, g, s = teacher(), general(), student("hrkd", general=True)
    p = _progress(tmp_path, [t, g, s])
    finish(p.root, t)
    assert p.waits_for(s) == [GENERAL] and p.state(s) == "waiting"
    finish(p.root, g)
    assert p.state(s) == "ready"


def test_listing_is_run_order_then_the_count(tmp_path):
    t, kd, hrkd = teacher(), student("kd"), student("hrkd")
    p = _progress(tmp_path, [kd, t, hrkd])
    archive(p.archive, kd)
    # pending cells first, each prerequisite just before its first pending user; done cells after
    assert p.listing() == [f"ready    {TEACHER}", f"waiting  {hrkd.id}", f"archived {kd.id}",
                           f"1/3 cells done in {p.root} or {p.archive}"]
