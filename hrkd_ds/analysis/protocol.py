"""Protocol v2's marks on a slice: degenerate classifiers, and which comparisons were pre-registered.

Degenerate: a run that predicts one class for > 90% of a domain's test examples is a near-constant
classifier there (the MNLI L3 kd/hrkd students on telephone and slate); its accuracy is the class
prior, so the table flags it instead of averaging it in silently.

Pre-registered: configs/reproduce/grid.yaml's phases with a `registered` key had their
comparisons and the rule that reads them (top-level `preregistration`) committed before their
cells ran. A comparison is marked pre-registered only once every cell that reading needs is
finished (the phase's cells of the slice and both methods at the phase's seeds, and as many
paired seeds as the rule reads); until then, and for every comparison no registered phase
names, what the report shows was decided with the earlier protocol. A phase that runs what a
dev-only rule chose (analysis/selection.py) is read once the choice is made, under the chosen name.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from hrkd_ds.analysis.cells import parse_student_cell_id
from hrkd_ds.analysis.selection import selected_rule

DEGENERATE_SHARE = 0.9


def degenerate_domains(preds: Mapping[str, Any], split: str = "test", share: float = DEGENERATE_SHARE) -> list[dict[str, Any]]:
    """The domains of `split` where one predicted class takes more than `share` of the predictions."""
    out = []
    for d, p in (preds.get(split) or {}).items():
        pred = [int(x) for x in p.get("pred", [])]
        if not pred:
            continue
        cls, count = Counter(pred).most_common(1)[0]
        if count / len(pred) > share:
            out.append({"domain": d, "class": cls, "share": count / len(pred)})
    return out


def parse_comparison(text: str) -> tuple[str, str]:
    """'hrkd-nodrop - kd' -> ('hrkd-nodrop', 'kd'): methods have hyphens, the minus has spaces."""
    a, sep, b = str(text).partition(" - ")
    if not sep or not a.strip() or not b.strip():
        raise ValueError(f"registered comparison {text!r}: expected 'a - b'")
    return a.strip(), b.strip()


def phase_label(phase: Mapping[str, Any], seeds: Sequence[int]) -> str:
    """A registered phase named by what it runs ('amazon 1.0 L4H192sel+L3 none+kd+hrkd seeds 4+5'),
    not by its position in the spec, so a phase inserted before it leaves the report unchanged."""
    parts = [phase.get("datasets"), phase.get("fractions"), phase.get("students"), phase.get("methods")]
    return " ".join("+".join(str(x) for x in p or []) for p in parts) + " seeds " + "+".join(str(s) for s in seeds)


def registered_phases(spec: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Each phase with a `registered` key, with its rule (the spec's `preregistration` entry)."""
    if not spec:
        return []
    rules = spec.get("preregistration") or {}
    out = []
    for phase in spec.get("phases") or []:
        reg = phase.get("registered")
        if not isinstance(reg, Mapping) or any(selected_rule(m) for m in phase.get("methods") or []):
            continue  # unregistered, or its method not yet chosen (selection.resolve): no cells to read
        seeds = [int(s) for s in phase.get("seeds", spec.get("seeds") or [])]
        out.append({"phase": phase_label(phase, seeds), "date": str(reg.get("date", "")),
                    "rule_name": str(reg.get("rule", "")), "rule": rules.get(reg.get("rule")) or {},
                    "compare": [parse_comparison(c) for c in reg.get("compare") or []],
                    "datasets": list(phase.get("datasets") or []), "fractions": [float(f) for f in phase.get("fractions") or []],
                    "students": list(phase.get("students") or []), "methods": list(phase.get("methods") or []),
                    "seeds": seeds, "selected": dict(reg["selected"]) if isinstance(reg.get("selected"), Mapping) else None})
    return out


def registered_compare(phases: Sequence[Mapping[str, Any]], compare: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """`compare` followed by every pair a registered phase names that it lacks (logit-kd - none, ...),
    in spec order: a comparison registered before its cells ran is always read."""
    out = list(compare)
    for ph in phases:
        out += [pair for pair in ph["compare"] if pair not in out]
    return out


def registration(phases: Sequence[Mapping[str, Any]], slice_key: tuple[str, float, str], a: str, b: str,
                 finished: set[tuple[str, int]], n_paired: int) -> dict[str, Any]:
    """How comparison a - b of a slice was decided: pre-registered (and complete), or the earlier protocol.

    `finished`: the slice's finished (method, seed) cells; `n_paired`: the seeds both methods have.
    Of several phases naming it, the first that runs a method chosen on dev reads it (so the
    report can say which seeds the choice read), else the first."""
    dataset, fraction, student = slice_key
    naming = [ph for ph in phases if (a, b) in ph["compare"] and dataset in ph["datasets"] and student in ph["students"]
              and any(abs(fraction - f) < 1e-9 for f in ph["fractions"])]
    for ph in sorted(naming, key=lambda ph: not ph.get("selected")):  # stable: phase order within each kind
        needed = {(m, s) for m in {*ph["methods"], a, b} for s in ph["seeds"]}
        done = len(needed & finished)
        want_seeds = int(ph["rule"].get("seeds") or 0)
        complete = done == len(needed) and n_paired >= want_seeds
        out = {"status": "pre-registered" if complete else "earlier protocol", "phase": ph["phase"], "date": ph["date"],
               "rule": ph["rule_name"], "cells_done": done, "cells_needed": len(needed), "seeds_needed": want_seeds}
        if ph.get("selected"):  # the method this phase runs was chosen by a dev-only rule before it ran
            out["selected"] = _selected_here(ph["selected"], slice_key)
        return out
    return {"status": "earlier protocol"}


def _selected_here(selected: Mapping[str, Any], slice_key: tuple[str, float, str]) -> dict[str, Any]:
    """The choice behind a comparison, with the seeds of this slice whose cells of the chosen method
    the choice read on dev (`selection_seeds`): there the slice is not independent of the choice."""
    dataset, fraction, student = slice_key
    seeds = []
    for ds, frac, st, method, seed in map(parse_student_cell_id, selected.get("read") or []):
        if (ds, st, method) == (dataset, student, selected["method"]) and abs(frac - fraction) < 1e-9:
            seeds.append(seed)
    return {"rule": selected["rule"], "method": selected["method"], "selection_seeds": sorted(seeds)}
