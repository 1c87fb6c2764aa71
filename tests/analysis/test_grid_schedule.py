"""The grid's run loop with a fake runner (no trainer): what runs, in which order, what is skipped,
and when a pass stops (--max-hours, a checkpointed exit 3, a requested stop); failures listed."""

from __future__ import annotations

from grid_fakes import TEACHER, archive, finish, general, student, teacher

from hrkd_ds.analysis.grid_progress import Progress
from hrkd_ds.analysis.grid_schedule import STOPPED_EXIT, last_line, run_grid


class FakeRunner:
    """Runs a cell by finishing it on disk (exit 0), or returns the exit code given for its id,
    writing `log` as the cell's train.log; each run takes `hours` on the fake clock."""

    def __init__(self, root, exits=None, hours=0.0, log="Traceback ...\nRuntimeError: boom\n"):
        self.root, self.exits, self.hours, self.log = root, exits or {}, hours, log
        self.ran, self.now = [], 0.0

    def clock(self) -> float:
        return self.now

    def __call__(self, cell) -> int:
        self.ran.append(cell.id)
        self.now += self.hours * 3600
        rc = self.exits.get(cell.id, 0)
        if rc == 0:
            finish(self.root, cell)
        else:
            cell.run_dir(self.root).mkdir(parents=True, exist_ok=True)
            (cell.run_dir(self.root) / "train.log").write_text(self.log)
        return rc


def _run(tmp_path, cells, **kw):
    progress = Progress(cells, tmp_path / "grid", tmp_path / "archive")
    runner = FakeRunner(progress.root, **{k: kw.pop(k) for k in ("exits", "hours") if k in kw})
    lines: list[str] = []
    rc = run_grid(progress, runner, clock=runner.clock, say=lines.append, **kw)
    return rc, runner.ran, lines


def test_a_pass_runs_the_teacher_first_then_its_users_and_archives_each_student(tmp_path):
    kd, hrkd = student("kd"), student("hrkd")
    rc, ran, lines = _run(tmp_path, [kd, teacher(), hrkd])
    assert rc == 0 and ran == [TEACHER, kd.id, hrkd.id]
    assert lines == [f"[run ] {TEACHER}", f"[done] {TEACHER} (0 s, exit 0)",
                     f"[run ] {kd.id}", f"[done] {kd.id} (0 s, exit 0)", f"[arch] {kd.id} -> {tmp_path / 'archive'}",
                     f"[run ] {hrkd.id}", f"[done] {hrkd.id} (0 s, exit 0)", f"[arch] {hrkd.id} -> {tmp_path / 'archive'}"]
    assert Progress([kd, hrkd], tmp_path / "fresh", tmp_path / "archive").done(kd)  # a new machine skips it


def test_done_archived_and_unneeded_cells_do_not_run(tmp_path):
    t, kd, hrkd = teacher(), student("kd"), student("hrkd")
    finish(tmp_path / "grid", kd)
    archive(tmp_path / "archive", hrkd)
    rc, ran, lines = _run(tmp_path, [t, kd, hrkd])
    assert (rc, ran, lines) == (0, [], [])  # the teacher is unneeded: both its users are done


def test_a_teacher_runs_again_only_for_a_pending_user(tmp_path):
    t, kd, hrkd = teacher(), student("kd"), student("hrkd")
    archive(tmp_path / "archive", kd)
    rc, ran, _ = _run(tmp_path, [t, kd, hrkd])
    assert rc == 0 and ran == [TEACHER, hrkd.id]


def test_a_failed_prerequisite_skips_its_users_and_the_failure_is_listed(tmp_path):
    t, g, kd, s = teacher(), general(), student("kd"), student("hrkd", general=True)
    rc, ran, lines = _run(tmp_path, [t, g, kd, s], exits={g.id: 1})
    assert rc == 1 and ran == [TEACHER, kd.id, g.id]  # kd still runs: it needs only the teacher
    assert f"[FAIL] {g.id} (0 s, exit 1)" in lines
    assert lines[lines.index(f"[FAIL] {g.id} (0 s, exit 1)") + 1] == "       RuntimeError: boom"  # the log's last line
    assert f"[skip] {s.id}: waits for {g.id}" in lines
    assert lines[-1] == f"1 cell(s) failed: {g.id}"


def test_a_failed_student_does_not_stop_the_pass(tmp_path):
    kd, hrkd, none = student("kd"), student("hrkd"), student("none")
    rc, ran, lines = _run(tmp_path, [teacher(), none, kd, hrkd], exits={none.id: 1, hrkd.id: 4})
    assert rc == 1 and ran == [TEACHER, none.id, kd.id, hrkd.id]
    assert lines[-1] == f"2 cell(s) failed: {none.id}, {hrkd.id}"


def test_exit_3_stops_the_pass_after_that_cell(tmp_path):
    kd, hrkd = student("kd"), student("hrkd")
    rc, ran, lines = _run(tmp_path, [teacher(), kd, hrkd], exits={kd.id: STOPPED_EXIT})
    assert STOPPED_EXIT == 3 and rc == 3 and ran == [TEACHER, kd.id]
    assert lines[-1] == "[stop] stopped; rerun the same command to continue"
    assert not any("failed" in line for line in lines)  # checkpointed, not failed: it resumes on the next run


def test_a_requested_stop_ends_the_pass_after_the_running_cell(tmp_path):
    kd = student("kd")
    rc, ran, lines = _run(tmp_path, [teacher(), kd], stop_requested=lambda: True)
    assert rc == 3 and ran == [TEACHER] and lines[-1] == "[stop] stopped; rerun the same command to continue"


def test_max_hours_starts_no_cell_after_the_limit(tmp_path):
    cells = [teacher(), student("none"), student("kd"), student("hrkd")]
    rc, ran, lines = _run(tmp_path, cells, hours=1.0, max_hours=1.5)
    # checked before each cell: 0 h (teacher), 1 h (none) still under 1.5 h; at 2 h kd does not start
    assert rc == 0 and ran == [TEACHER, cells[1].id]
    assert f"[done] {TEACHER} (3600 s, exit 0)" in lines
    assert lines[-1] == "[stop] --max-hours 1.5 reached; rerun to continue"
    rc, ran, _ = _run(tmp_path, cells, hours=1.0, max_hours=0)  # 0: no limit; the rerun continues
    assert rc == 0 and ran == [cells[2].id, cells[3].id]


def test_last_line_of_a_log(tmp_path):
    log = tmp_path / "train.log"
    assert last_line(log) == ""  # no log (the cell never started)
    log.write_text("a\n" + "x" * 400 + "\n\n  \n")
    assert last_line(log) == "x" * 300
