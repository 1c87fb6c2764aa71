"""How long the cells left will take, from what finished cells of the same kind recorded.

Why: a grid of a few hundred cells on two cores runs for days in chunks, and which phase is worth
starting before a machine goes back depends on how long it takes. Only recorded costs are used
(timing.json, analysis/cell_timing.py), never a guess: a pending cell is estimated by the median
wall seconds of the finished cells of its kind (the same dataset, fraction, student and method:
its id without the seed) in the live grid and the archive; a cell with no finished peer is
counted as unknown. A cell that has started counts whole (its checkpoint may save part of it).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any, Iterable

from hrkd_ds.analysis.cell_timing import TIMING_FILE, cell_cost

_SEED = re.compile(r"/s\d+$")


def kind_of(cell_id: str) -> str:
    """'amazon/f0.1/L3/kd/s2' -> 'amazon/f0.1/L3/kd'; a teacher or general cell is its own kind."""
    return _SEED.sub("", cell_id)


def _walls(kind: str, roots: Iterable[Path]) -> list[float]:
    """The recorded wall seconds of the finished seeds of a student kind (a teacher or general cell
    has no peers: the one of its kind is itself)."""
    out = []
    for root in roots:
        for p in sorted((root / kind).glob(f"s*/{TIMING_FILE}")):
            try:
                cost = cell_cost(json.loads(p.read_text()))
            except (OSError, ValueError):
                cost = None
            if cost is not None:
                out.append(cost["wall_s"])
    return out


def estimate(pending_ids: Iterable[str], roots: Iterable[Path]) -> dict[str, Any]:
    """{"known_s": sum of the estimates, "known": cells estimated, "unknown": [ids of the cells
    whose kind has no finished, timed peer]} for the cells not yet done."""
    roots, by_kind, known_s, known, unknown = list(roots), {}, 0.0, 0, []
    for cid in pending_ids:
        kind = kind_of(cid)
        if kind not in by_kind:
            walls = _walls(kind, roots)
            by_kind[kind] = statistics.median(walls) if walls else None
        if by_kind[kind] is None:
            unknown.append(cid)
            continue
        known_s += by_kind[kind]
        known += 1
    return {"known_s": known_s, "known": known, "unknown": unknown}


def estimate_line(pending_ids: list[str], roots: Iterable[Path]) -> str:
    """`--list`'s last line: the time the pending cells of recorded kinds need, and how many have none."""
    e = estimate(pending_ids, roots)
    kinds = len({kind_of(c) for c in e["unknown"]})
    if not pending_ids:
        return "left: none"
    if not e["known"]:
        return f"left: {len(pending_ids)} cells, none of a kind already timed"
    return (f"left: {len(pending_ids)} cells; {e['known']} of kinds already timed, about {e['known_s'] / 3600:.1f} h "
            f"wall at their medians; {len(e['unknown'])} more, of {kinds} kinds not timed yet")
