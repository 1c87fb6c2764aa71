"""A pre-registered choice made by dev accuracy alone, and the grid phases that run what it chose.

A rule in the grid spec's `preregistration` may carry a `choose` block, its machine form
(configs/reproduce/grid.yaml, `v2-recipes`):

    choose: {datasets: [amazon], fractions: ["0.1"], students: [L4H192sel, L3], seeds: [1, 2, 3],
             candidates: [kd, logit-kd, ...], tie_pts: 0.2, cost: {kd: 1.0, logit-kd: 1.0, ...}}

The chosen method has the highest mean dev accuracy over every (student, seed) cell of the
candidates; among those within `tie_pts` points of it, the one of lowest declared `cost` (then
the higher mean). Only `results.json`'s student dev average is read: test never chooses.

A phase whose `methods` holds `{selected: <rule>}` runs what that rule chose: until every cell the
rule reads has finished, the phase has no cells (`--list` says what it waits for); once it has,
the phase runs the chosen method under its own name, so its cells, archive and tables are those of
an ordinary method, and `best` in the phase's registered comparisons reads as that name. The
phase, its rule and its comparisons are committed before the choice is made, which is the point:
nobody picks the method after seeing how it scored.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping

from hrkd_ds.analysis.cells import student_cell_id
from hrkd_ds.errors import UserError

BEST = "best"  # in a selected phase's registered comparisons: the method the rule chose
DevOf = Callable[[str], "float | None"]  # cell id -> its student dev accuracy, None while unfinished


def selected_rule(item: Any) -> str | None:
    """The rule a phase's method entry defers to (`{selected: v2-recipes}`), None for a plain name."""
    return str(item["selected"]) if isinstance(item, Mapping) and "selected" in item else None


def check_choose(spec: Mapping[str, Any], rule: str, where: str) -> Mapping[str, Any]:
    """The rule's `choose` block, with every name it uses defined in the spec (one line naming the field otherwise)."""
    entry = (spec.get("preregistration") or {}).get(rule)
    choose = entry.get("choose") if isinstance(entry, Mapping) else None
    if not isinstance(choose, Mapping):
        raise UserError(f"{where}: 'selected: {rule}' needs preregistration.{rule}.choose")
    field = f"preregistration.{rule}.choose"
    for key in ("datasets", "fractions", "students", "seeds", "candidates"):
        if not choose.get(key):
            raise UserError(f"{where}: {field}.{key} is missing or empty")
    for key, names in (("datasets", choose["datasets"]), ("students", choose["students"]), ("methods", choose["candidates"])):
        for name in names:
            if name not in spec[key]:
                raise UserError(f"{where}: {field} names '{name}', which is not in '{key}'")
    cost = choose.get("cost") or {}
    lacking = [m for m in choose["candidates"] if not isinstance(cost.get(m), (int, float))]
    if lacking:
        raise UserError(f"{where}: {field}.cost has no number for {', '.join(lacking)}")
    return choose


def choose_cells(choose: Mapping[str, Any]) -> dict[str, list[str]]:
    """candidate -> the ids of the cells the rule reads for it."""
    return {m: [student_cell_id(ds, frac, st, m, seed) for ds in choose["datasets"] for frac in choose["fractions"]
                for st in choose["students"] for seed in choose["seeds"]]
            for m in choose["candidates"]}


def _devs(choose: Mapping[str, Any], dev_of: DevOf) -> dict[str, list[float]]:
    """candidate -> the dev accuracies of its finished cells among those `choose` names."""
    return {m: [d for d in map(dev_of, ids) if d is not None] for m, ids in choose_cells(choose).items()}


def _means(devs: Mapping[str, list[float]]) -> dict[str, float]:
    return {m: sum(v) / len(v) for m, v in devs.items() if v}


def decide(choose: Mapping[str, Any], dev_of: DevOf) -> dict[str, Any]:
    """{"method": chosen or None, "means": candidate -> mean dev (of finished cells), "by_student":
    student -> candidate -> mean dev, "done", "needed", "counts": candidate -> its finished cells}."""
    devs = _devs(choose, dev_of)
    done, needed = sum(map(len, devs.values())), sum(map(len, choose_cells(choose).values()))
    means = _means(devs)
    by_student = {st: _means(_devs({**choose, "students": [st]}, dev_of)) for st in choose["students"]}  # for the report
    out: dict[str, Any] = {"method": None, "means": means, "by_student": by_student, "done": done, "needed": needed,
                           "counts": {m: len(v) for m, v in devs.items()}}
    if done < needed:
        return out
    top = max(means.values())
    tie = float(choose.get("tie_pts", 0.0)) / 100.0  # points -> accuracy
    close = [m for m in choose["candidates"] if means[m] >= top - tie - 1e-12]
    out["method"] = min(close, key=lambda m: (float(choose["cost"][m]), -means[m]))
    return out


def dev_of_cells(cells: Iterable[Any]) -> DevOf:
    """Cell id -> student dev average, from finished cells (analysis/cells.py's Cell: id, results)."""
    devs: dict[str, float] = {}
    for c in cells:
        try:
            devs[c.id] = float(c.results["student"]["dev"]["average"])
        except (KeyError, TypeError, ValueError):
            continue  # a cell without a dev average counts as unfinished for a choice
    return devs.get


def choose_rules(spec: Mapping[str, Any]) -> dict[str, str]:
    """rule -> where it is first named, for every rule with a `choose` block: those a phase defers
    to in phase order, then the others (a choice the report records though no phase runs it yet)."""
    out: dict[str, str] = {}
    for i, phase in enumerate(spec["phases"]):
        for rule in filter(None, map(selected_rule, phase.get("methods") or [])):
            out.setdefault(rule, f"phases[{i}]")
    for rule, entry in (spec.get("preregistration") or {}).items():
        if isinstance(entry, Mapping) and "choose" in entry:
            out.setdefault(rule, f"preregistration.{rule}")
    return out


def decisions(spec: Mapping[str, Any], dev_of: DevOf) -> dict[str, dict[str, Any]]:
    """rule -> its decision (`decide`) for every rule of `choose_rules`; a malformed rule is named
    by the first phase that defers to it."""
    return {rule: decide(check_choose(spec, rule, where), dev_of) for rule, where in choose_rules(spec).items()}


def choice_lines(spec: Mapping[str, Any], dev_of: DevOf) -> list[str]:
    """One line per decided rule: what it chose and every candidate's mean dev (the grid's log and
    `--list` name the choice; the report's tables come much later)."""
    lines = []
    for rule, d in decisions(spec, dev_of).items():
        if d["method"] is not None:
            means = ", ".join(f"{m} {100 * v:.2f}" for m, v in sorted(d["means"].items(), key=lambda kv: -kv[1]))
            lines.append(f"{rule} chose {d['method']} on dev (mean dev % over {d['needed']} cells: {means})")
    return lines


def choice_summary(spec: Mapping[str, Any], dev_of: DevOf) -> list[dict[str, Any]]:
    """Each rule's decision as the report records it (summary.json's `choices`): the chosen method or
    None, cells finished of needed, and per candidate its mean dev (all, and per student), its cells
    finished of those the rule reads, and its declared cost."""
    out = []
    for rule, d in decisions(spec, dev_of).items():
        choose = spec["preregistration"][rule]["choose"]
        out.append({"rule": rule, "method": d["method"], "done": d["done"], "needed": d["needed"],
                    "tie_pts": float(choose.get("tie_pts", 0.0)), "students": list(choose["students"]),
                    "seeds": list(choose["seeds"]), "where": [list(choose["datasets"]), [str(f) for f in choose["fractions"]]],
                    "candidates": [{"method": m, "cost": float(choose["cost"][m]), "mean": d["means"].get(m),
                                    "cells": d["counts"][m], "of": len(choose_cells(choose)[m]),
                                    "by_student": {st: d["by_student"][st].get(m) for st in choose["students"]}}
                                   for m in choose["candidates"]]})
    return out


def resolve(spec: Mapping[str, Any], dev_of: DevOf) -> tuple[dict[str, Any], list[str]]:
    """(the spec with each decided `{selected: rule}` replaced by the chosen method, and `best` in
    its phase's comparisons by that name; undecided phases left out, with one line each saying
    what they wait for). The spec given is not changed."""
    out = copy.deepcopy(dict(spec))
    phases, waiting = [], []
    decided = decisions(out, dev_of)
    for i, phase in enumerate(out["phases"]):
        rule = next(filter(None, map(selected_rule, phase.get("methods") or [])), None)
        if rule is None:
            phases.append(phase)
            continue
        d = decided[rule]
        if d["method"] is None:
            waiting.append(f"phases[{i}] waits for the {rule} choice: {d['done']} of {d['needed']} cells finished")
            continue
        best = d["method"]
        phase["methods"] = [best if selected_rule(m) else m for m in phase["methods"]]
        reg = phase.get("registered")
        if isinstance(reg, dict):
            pairs = [[best if side.strip() == BEST else side.strip() for side in str(c).split(" - ")]
                     for c in reg.get("compare") or []]
            reg["compare"] = [" - ".join(p) for p in pairs if len(set(p)) == len(p)]  # kd chosen: no "kd - kd"
            reg["selected"] = {"rule": rule, "method": best,  # + the cells of it the choice read (their dev)
                               "read": choose_cells(out["preregistration"][rule]["choose"])[best]}
        phases.append(phase)
    out["phases"] = phases
    return out, waiting
