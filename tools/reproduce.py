"""Run the reproduction grid (configs/reproduce/grid.yaml) in resumable chunks, then tabulate it.

    python tools/reproduce.py --list                          # every cell and its state
    python tools/reproduce.py --max-hours 2                   # run pending cells for up to 2 h
    python tools/reproduce.py --only 'amazon/f1.0/L3/*' --seeds 1,2
    python tools/reproduce.py --report                        # docs/RESULTS.md + docs/results/* + README's tables
    python tools/reproduce.py --report --archive A --out G    # another grid: <A>-report/ (or --report-dir)
    python tools/reproduce.py --duplicates                    # rebuild docs/results/duplicates/ from the data
    python tools/reproduce.py --smoke --out /tmp/smoke        # same code path, shipped sample, minutes

Each cell is an ordinary `hrkd_ds/train.py` run in its own directory (log: <cell>/train.log);
finished cells are skipped and an interrupted cell resumes from its checkpoint, so the grid can
be stopped at any moment and continued later. Each finished student cell's record (cell.json,
results.json, predictions) is copied into --archive (docs/results/cells/, committed with the
code): an archived cell counts as done on any machine, and the report reads the archive beside the
live grid, so a lost grid directory loses no result. Teacher and general cells are not archived
(they are models that later cells load): they run again only where a pending cell needs them,
just before the first such cell. Only the project's own archive updates docs/: the report of any
other archive goes where --report-dir says (default: <archive>-report/ beside it; --smoke: the grid
directory).
A phase that runs what a pre-registered dev-only rule chose (`methods: [{selected: RULE}]`,
hrkd_ds/analysis/selection.py) has no cells until every cell the rule reads is finished: --list
and the run's `[wait]` lines say how many are, and the run plans itself again the moment the
choice can be made, so the chosen phase runs in its place.
Data: --amazon DIR, --mnli TRAIN_TSV, --mnli-test TEST_TSV (default: the dataset configs' paths).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from hrkd_ds.analysis.archive import sync_archive
from hrkd_ds.analysis.cell_timing import record_attempt, timed
from hrkd_ds.analysis.grid_estimate import estimate_line
from hrkd_ds.analysis.cells import METHOD_ORDER, scan_grids
from hrkd_ds.analysis.duplicates import regenerate as regenerate_duplicates
from hrkd_ds.analysis.grid import GridCell, check_phases, expand, load_spec, select
from hrkd_ds.analysis.grid_progress import Progress
from hrkd_ds.analysis.grid_schedule import STOPPED_EXIT, run_planned
from hrkd_ds.analysis.readme_table import update_readme
from hrkd_ds.analysis.results import write_results
from hrkd_ds.analysis.selection import choice_lines, dev_of_cells, resolve
from hrkd_ds.errors import UserError, exit_on_user_error
from hrkd_ds.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]  # the checkout: spec, docs/ and the trainer are found from here
DEFAULT_SPEC = "configs/reproduce/grid.yaml"
INTRO = REPO / "docs" / "results" / "intro.md"  # the hand-written part of docs/RESULTS.md (method, budget, findings)
ARCHIVE = REPO / "docs" / "results" / "cells"  # finished student cells' records, committed
LEGACY = REPO / "docs" / "results" / "legacy"  # slice summaries from grids whose records were lost
DUPLICATES = REPO / "docs" / "results" / "duplicates"  # train/test duplicate indices (duplicates.py), committed
DOCS = REPO / "docs"
README = REPO / "README.md"  # its generated block (analysis/readme_table.py) is rewritten by the project's report
# --smoke: the real grid's code path on the shipped sample, a few steps each: the three methods and
# the two recipes (the reports' METHOD_ORDER) on the student from teacher layers (a slice with its bootstrap), then hrkd on one
# student of each other start (the general stage, weights selected from the teacher). The grid's
# other students and methods differ from these in overrides only; each cell costs CI about 25 s
SMOKE_PHASES = [
    {"datasets": ["amazon"], "fractions": ["1.0"], "students": ["L3"], "methods": list(METHOD_ORDER),
     "seeds": [1]},
    {"datasets": ["amazon"], "fractions": ["1.0"], "students": ["L4H192", "L4H192sel"], "methods": ["hrkd"], "seeds": [1]},
]
SMOKE_OVERRIDES = [
    "data.path=", "data.max_seq_len=32", "data.dev_fraction=0.02", "data.test_fraction=0.02", "data.train_fraction=0.05",
    "general_train.max_steps=2", "teacher_train.max_steps=2", "distill_train.max_steps=2",
    "general_train.batch_per_domain=2", "teacher_train.batch_per_domain=2", "distill_train.batch_per_domain=2",
    "teacher_train.eval_every=1", "distill_train.eval_every=1", "tracking.progress_bar=false",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=DEFAULT_SPEC, help="grid YAML")
    p.add_argument("--out", default=None, help="grid directory (default: runs/reproduce, or runs/reproduce-smoke)")
    p.add_argument("--archive", default=None,
                   help="finished cells' records (default: docs/results/cells, or <out>-archive with --smoke)")
    p.add_argument("--amazon", help="Blitzer Amazon reviews directory (<domain>/<label>.review)")
    p.add_argument("--mnli", help="MNLI train TSV (genre column)")
    p.add_argument("--mnli-test", help="MNLI test TSV (the genres' dev-matched slice)")
    p.add_argument("--only", nargs="*", help="glob(s) on cell ids, e.g. 'amazon/f1.0/L3/*'")
    p.add_argument("--seeds", help="comma-separated seeds (default: the spec's)")
    p.add_argument("--list", action="store_true", help="print the cells and their state, run nothing")
    p.add_argument("--report", action="store_true", help="only tabulate: docs/RESULTS.md and docs/results/ (the project's archive)")
    p.add_argument("--report-dir", default=None,
                   help="where the report goes (RESULTS.md, results/); default: docs/ for the project's archive, "
                        "else <archive>-report beside the archive (--smoke: the grid directory)")
    p.add_argument("--duplicates", action="store_true",
                   help="rebuild the train/test duplicate indices (docs/results/duplicates/) from the data, run nothing")
    p.add_argument("--smoke", action="store_true", help="tiny slice of the same code path on the shipped sample")
    p.add_argument("--max-hours", type=float, default=0.0, help="start no new cell after this long (0 = no limit)")
    p.add_argument("--wandb", action="store_true", help="track cells in W&B (offline unless a key is set)")
    return p.parse_args(argv)


def data_overrides(args: argparse.Namespace) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"amazon": [], "mnli": []}
    if args.amazon:
        out["amazon"].append(f"data.path={Path(args.amazon).resolve()}")
    if args.mnli:
        out["mnli"].append(f"data.path={Path(args.mnli).resolve()}")
    if args.mnli_test:
        out["mnli"].append(f"data.test_path={Path(args.mnli_test).resolve()}")
    return out


def grid_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(live grid root, archive)."""
    root = Path(args.out or ("runs/reproduce-smoke" if args.smoke else "runs/reproduce")).resolve()
    archive = Path(args.archive).resolve() if args.archive else (root.with_name(root.name + "-archive") if args.smoke else ARCHIVE)
    return root, archive


def build_cells(args: argparse.Namespace) -> tuple[list[GridCell], Path, Path, dict, list[str], list[str]]:
    """(cells, root, archive, the spec as written, the phases still waiting for a pre-registered
    choice, the choices made with their candidates' dev means)."""
    spec = load_spec(REPO / args.spec)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    overrides = data_overrides(args)
    root, archive = grid_dirs(args)
    if args.smoke:
        spec["phases"] = SMOKE_PHASES
        check_phases(spec, f"--smoke on {args.spec}")
        overrides["amazon"] = SMOKE_OVERRIDES
    dev_of = dev_of_cells(scan_grids([root, archive])[0])  # dev only (analysis/selection.py)
    chosen, waiting = resolve(spec, dev_of)
    cells = select(expand(chosen, REPO, overrides, seeds), args.only)
    if args.smoke:  # the tiny schedule wins over the fraction's epochs and evaluation period
        for c in cells:
            c.overrides += SMOKE_OVERRIDES
    return cells, root, archive, spec, waiting, choice_lines(spec, dev_of)


STOP = {"requested": False}  # Ctrl-C / SIGTERM: the running cell checkpoints, then the grid stops


def code_version() -> str:
    """The checkout's commit (+dirty with changes to the code or configs): which code trained a cell."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hrkd_ds", "tools", "configs", "ds_configs"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def run_cell(cell: GridCell, root: Path, wandb: bool) -> int:
    """One trainer run; its output goes to <cell>/train.log. Ctrl-C or SIGTERM becomes one SIGTERM
    for it (the trainer checkpoints and exits 3) and stops the grid after it."""
    run_dir = cell.run_dir(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cell.meta:
        atomic_write_json(run_dir / "cell.json", cell.meta)
    cmd = cell.command(root, sys.executable, "hrkd_ds/train.py")
    if not wandb:
        cmd.append("tracking.wandb_mode=disabled")
    code, started = code_version(), time.strftime('%Y-%m-%d %H:%M:%S')
    with open(run_dir / "train.log", "a") as log:
        log.write(f"\n# code {code}, {started}\n$ {' '.join(cmd)}\n")
        log.flush()
        # its own session: a Ctrl-C on the terminal reaches only us, and we pass it on once
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def forward(_signum, _frame) -> None:
            if not STOP["requested"]:
                STOP["requested"] = True
                proc.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rc, wall_s, cpu_s = timed(proc.wait)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
    record_attempt(run_dir, started=started, code=code, rc=rc, wall_s=wall_s, cpu_s=cpu_s)  # the recipe's cost
    return rc


def report_paths(root: Path, archive: Path, smoke: bool, report_dir: str | None) -> tuple[Path, Path, bool]:
    """(RESULTS.md, results folder, whether this is the project's report). Only the project's own
    archive writes docs/: another archive's report going there would replace the project's tables
    and, through the stale-slice cleanup, delete its slices' files."""
    own = archive.resolve() == ARCHIVE.resolve() and not smoke
    if report_dir:
        dest = Path(report_dir).resolve()
    else:
        dest = DOCS if own else root if smoke else archive.with_name(archive.name + "-report")
    if not own and (dest == DOCS.resolve() or dest.is_relative_to(DOCS.resolve())):
        raise UserError(f"--report-dir {dest}: only the project's archive ({ARCHIVE.relative_to(REPO)}) reports into "
                        f"{DOCS.relative_to(REPO)}/; give another folder for {archive}")
    return dest / "RESULTS.md", dest / "results", own


def _shown(path: Path) -> str:
    """A root as RESULTS.md names it: relative to the repository when inside it (no machine's paths in docs)."""
    p = path.resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else f"…/{p.name}"


def report(root: Path, archive: Path, smoke: bool, spec: dict, report_dir: str | None = None) -> Path:
    md, json_dir, own = report_paths(root, archive, smoke, report_dir)
    intro = INTRO.read_text() if INTRO.is_file() and own else ""
    sync_archive(root, archive)
    out = write_results([root, archive], md, json_dir, intro=intro, legacy_dir=LEGACY if own else None, spec=spec,
                        duplicates_dir=DUPLICATES, source=", ".join(_shown(r) for r in (root, archive)))
    print(f"wrote {md} ({len(out.get('slices', []))} slices, {len(out.get('missing', []))} missing cells)")
    if own and md.parent == DOCS.resolve():  # the README states the project's own numbers, nobody else's
        atomic_write_text(README, update_readme(README.read_text(), out.get("slices", []), out.get("choices", [])))
        print(f"wrote {README} (its generated tables)")
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with exit_on_user_error("reproduce"):
        cells, root, archive, spec, waiting, choices = build_cells(args)
        if args.duplicates:
            for path in regenerate_duplicates(load_spec(REPO / args.spec), REPO, DUPLICATES, data_overrides(args)):
                print(f"wrote {path}")
            return 0
        progress = Progress(cells, root, archive)
        if args.list:
            pending = [c.id for c in progress.order() if progress.state(c) in ("ready", "waiting")]
            print("\n".join(progress.listing() + [estimate_line(pending, [root, archive])] + waiting + choices))
            return 0
        rc = 0
        if not args.report:
            said = set()

            def plan() -> tuple[Progress, list[str]]:
                cells, _, _, _, waiting, choices = build_cells(args)
                for line in choices:  # each choice named once, when the grid first plans with it
                    if line not in said:
                        print(f"[plan] {line}", flush=True)
                        said.add(line)
                return Progress(cells, root, archive), waiting

            rc = run_planned(plan, lambda cell: run_cell(cell, root, args.wandb), args.max_hours,
                             stop_requested=lambda: STOP["requested"], say=lambda line: print(line, flush=True))
            if rc == STOPPED_EXIT:
                return rc
        if not root.is_dir() and not archive.is_dir():
            raise UserError(f"no grid at {root} and no archive at {archive}: run it first")
        report(root, archive, args.smoke, spec, args.report_dir)
        return rc


if __name__ == "__main__":
    sys.exit(main())
