"""The reproduction grid as data: a YAML spec expanded into cells, each an ordinary trainer run.

Three kinds of cell, each a directory under the grid root:

    <dataset>/f<fraction>/teacher                       stages=[teacher]   (one per dataset x fraction)
    <dataset>/f<fraction>/general-<student>             stages=[general]   (students marked `general`)
    <dataset>/f<fraction>/<student>/<method>/s<seed>    stages=[distill]   teacher_from the teacher cell

A cell is finished when its run directory says so (the stage's DONE marker and its results.json
entry); the runner skips finished cells, so the grid runs in chunks across days and machines.
Student cells carry a `cell.json` for analysis/results.py.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from hrkd_ds.config.schema import ROLE_OF_STAGE
from hrkd_ds.analysis.cells import student_cell_id
from hrkd_ds.analysis.selection import check_choose, choose_rules, selected_rule
from hrkd_ds.errors import UserError
from hrkd_ds.stages.run_dir import stage_finished


@dataclass
class GridCell:
    """One trainer run of the grid."""

    id: str  # its directory relative to the grid root, e.g. amazon/f1.0/L3/hrkd/s1
    stage: str  # teacher | general | distill
    config: str  # the dataset's YAML (--config)
    overrides: list[str]
    needs: list[str] = field(default_factory=list)  # ids of cells that must finish first
    meta: dict[str, Any] = field(default_factory=dict)  # cell.json for student cells

    def run_dir(self, root: Path) -> Path:
        return root / self.id

    def finished(self, root: Path) -> bool:
        return stage_finished(self.run_dir(root), ROLE_OF_STAGE[self.stage])

    def command(self, root: Path, python: str, train: str) -> list[str]:
        overrides = [o.replace("<root>", str(root)) for o in self.overrides]
        return [python, train, "--config", self.config, f"output_dir={self.run_dir(root)}",
                f"data.cache_dir={root / '.cache'}", f"stages=[{self.stage}]", *overrides]


def _settings_of(path: str, repo: Path) -> list[str]:
    """`@file.yaml` in a method: that file's settings as overrides (its output_dir excepted)."""
    values = yaml.safe_load((repo / path).read_text()) or {}
    values.pop("output_dir", None)

    def flat(d: dict[str, Any], prefix: str = "") -> list[str]:
        out: list[str] = []
        for k, v in d.items():
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={json.dumps(v) if isinstance(v, list) else v}"]
        return out

    return flat(values)


def _method_overrides(items: list[str], repo: Path) -> list[str]:
    out: list[str] = []
    for item in items:
        out += _settings_of(item[1:], repo) if item.startswith("@") else [item]
    return out


def load_spec(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"grid spec not found: {p}")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError:
        raise UserError(f"grid spec {p}: not valid YAML") from None
    for key in ("seeds", "datasets", "students", "methods", "phases"):
        if key not in (spec or {}):
            raise UserError(f"grid spec {p}: missing '{key}'")
    check_phases(spec, f"grid spec {p}")
    return spec


def check_phases(spec: dict[str, Any], where: str) -> None:
    """Every dataset, fraction, student and method a phase names is defined in the spec; every
    `choose` block, and the rule a `{selected: rule}` method (analysis/selection.py) names, is well formed."""
    for rule, at in choose_rules(spec).items():  # a choice no phase defers to is still read by the report
        check_choose(spec, rule, f"{where}: {at}")
    for i, phase in enumerate(spec["phases"]):
        rules = [r for r in map(selected_rule, phase.get("methods") or []) if r]
        if len(rules) > 1:
            raise UserError(f"{where}: phases[{i}].methods has {len(rules)} 'selected' entries; a phase runs one choice")
        for key in ("datasets", "students", "methods"):
            for name in phase.get(key) or []:
                if selected_rule(name) is None and name not in spec[key]:
                    raise UserError(f"{where}: phases[{i}].{key} names '{name}', which is not in '{key}'")
        for ds in phase.get("datasets") or []:
            for frac in phase.get("fractions") or []:
                if str(frac) not in (spec["datasets"][ds].get("fractions") or {}):
                    raise UserError(f"{where}: phases[{i}].fractions names '{frac}', not a fraction of '{ds}'")


def expand(spec: dict[str, Any], repo: Path, data_overrides: dict[str, list[str]] | None = None,
           seeds: list[int] | None = None) -> list[GridCell]:
    """Every cell of every phase, in phase order, each once; prerequisites before their users."""
    data_overrides = data_overrides or {}
    cells: dict[str, GridCell] = {}

    def add(cell: GridCell) -> None:
        cells.setdefault(cell.id, cell)

    for phase in spec["phases"]:
        for ds in phase["datasets"]:
            d = spec["datasets"][ds]
            base = [*data_overrides.get(ds, [])]
            for frac in phase["fractions"]:
                common = [*base, f"data.train_fraction={frac}", *d["fractions"][frac]]
                teacher_id = f"{ds}/f{frac}/teacher"
                add(GridCell(teacher_id, "teacher", d["config"], [*common, f"seed={spec.get('teacher_seed', 42)}"]))
                for student in phase["students"]:
                    s = spec["students"][student]
                    s_over = list(s["overrides"])
                    needs = [teacher_id]
                    if s.get("general"):
                        general_id = f"{ds}/f{frac}/general-{student}"
                        add(GridCell(general_id, "general", d["config"],
                                     [*common, *s_over, "student.init=general", f"seed={spec.get('general_seed', 42)}"]))
                        s_over += ["student.init=pretrained", f"student.pretrained=<root>/{general_id}/general/model"]
                        needs.append(general_id)
                    for method in phase["methods"]:
                        if selected_rule(method):  # not yet chosen: no cells until selection.resolve names it
                            continue
                        m_over = _method_overrides(spec["methods"][method], repo)
                        for seed in phase.get("seeds", spec["seeds"]):
                            if seeds and seed not in seeds:
                                continue
                            cid = student_cell_id(ds, frac, student, method, seed)
                            meta = {"dataset": ds, "fraction": float(frac), "method": method, "seed": seed,
                                    "student": student, "teacher": teacher_id}
                            add(GridCell(cid, "distill", d["config"],
                                         [*common, *s_over, *m_over, f"teacher_from=<root>/{teacher_id}", f"seed={seed}"],
                                         needs, meta))
    return list(cells.values())


def run_order(cells: list[GridCell], done: Callable[[GridCell], bool]) -> list[GridCell]:
    """The cells in phase order, each prerequisite moved to just before its first user still pending.

    A teacher that later phases need would otherwise run where its dataset first appears: with that
    phase archived, a fresh machine would spend its first half hour on a teacher nothing yet waits for."""
    by_id = {c.id: c for c in cells}
    users = {n for c in cells for n in c.needs}
    order: dict[str, GridCell] = {}

    def place(cell: GridCell) -> None:
        for n in cell.needs:
            if n in by_id:
                place(by_id[n])
        order.setdefault(cell.id, cell)

    for c in cells:
        if c.id not in users and not done(c):
            place(c)
    for c in cells:  # prerequisites whose users are all done (or asked for by name) keep their place after
        order.setdefault(c.id, c)
    return list(order.values())


def select(cells: list[GridCell], patterns: list[str] | None) -> list[GridCell]:
    """Cells whose id matches any glob in `patterns` (all when none), plus what they need."""
    if not patterns:
        return cells
    wanted = {c.id for c in cells if any(fnmatch.fnmatch(c.id, p) for p in patterns)}
    by_id = {c.id: c for c in cells}
    for cid in list(wanted):
        wanted.update(by_id[cid].needs)
    return [c for c in cells if c.id in wanted]
