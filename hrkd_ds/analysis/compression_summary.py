"""The compression figures of a grid slice: what each method's students cost against the teacher.

Every student cell records a compression report in its results.json (stages/artifacts.py); a
slice shows, per method, the median over seeds (sizes are identical across seeds and methods of a
student; latency is a noisy measurement, hence the median). Accuracy retained is the one exception:
it is the ratio of the mean test averages (student over teacher), the definition the README and the
results intro use, so a figure means the same wherever it is quoted. Beside them, what a cell took
to run (median over the cells with a timing record, analysis/cell_timing.py): a recipe's cost.
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping

from hrkd_ds.analysis.cell_timing import cell_cost


def summarize_compression(by_method: Mapping[str, Mapping[int, Any]]) -> list[dict[str, Any]]:
    """One row per method with any compression report: params, size, latency (ms) and speedup at
    batch 1 and 32 (medians over seeds), accuracy retained (% of teacher, ratio of the means), and the
    cell's wall and CPU minutes (medians over the timed cells)."""
    rows = []
    for method, cells in by_method.items():
        reps = [c.results["student"].get("compression") for c in cells.values()]
        reps = [r for r in reps if r]
        if not reps:
            continue

        def med(get) -> float | None:
            vals = [v for v in (get(r) for r in reps) if v is not None]
            return statistics.median(vals) if vals else None

        accs = [r["accuracy"] for r in reps if r.get("accuracy")]
        retained = (100.0 * statistics.fmean(a["student_average"] for a in accs)
                    / statistics.fmean(a["teacher_average"] for a in accs)) if accs else None

        costs = [k for k in (cell_cost(c.timing()) for c in cells.values()) if k]
        rows.append({
            "method": method, "n": len(reps),
            "timed": len(costs),  # cells archived before timing was recorded have no cost
            "wall_min": statistics.median(k["wall_s"] for k in costs) / 60 if costs else None,
            "cpu_min": statistics.median(k["cpu_s"] for k in costs) / 60 if costs else None,
            "student_params": med(lambda r: r["student"]["params"]), "teacher_params": med(lambda r: r["teacher"]["params"]),
            "student_mb": med(lambda r: r["student"]["size_bytes"] / 2**20),
            "teacher_mb": med(lambda r: r["teacher"]["size_bytes"] / 2**20),
            "latency_ms": {b: med(lambda r, b=b: r["student"]["latency_ms"].get(b)) for b in ("1", "32")},
            "teacher_latency_ms": {b: med(lambda r, b=b: r["teacher"]["latency_ms"].get(b)) for b in ("1", "32")},
            "speedup": {b: med(lambda r, b=b: r["speedup"].get(b)) for b in ("1", "32")},
            "retained_pct": retained,
        })
    return rows


def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _x(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}%"


def _cost(r: dict[str, Any]) -> str:
    if not r.get("timed"):
        return "–"
    return f"{r['wall_min']:.0f} / {r['cpu_min']:.0f} ({r['timed']})"


def render_compression(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the teacher first, then each method's students with their own runs' teacher
    latency beside theirs (measured side by side; absolute times follow the machine's load, the
    speedup is the figure to read)."""
    if not rows:
        return []
    t = rows[0]

    def pair(r: dict[str, Any], b: str, fmt: str) -> str:
        return f"{_f(r['latency_ms'][b], fmt)} / {_f(r['teacher_latency_ms'][b], fmt)}"

    lines = ["Size and CPU latency (1 thread, sequence length of the run; median over seeds). Latency is "
             "measured at the end of each run, student and teacher side by side: absolute times follow the "
             "machine's load, the speedup is the figure to read. Accuracy retained: the students' mean test "
             "average over the teacher's. Cell time: what training one student cell took, wall and CPU "
             "minutes (median over the cells timed; CPU leaves out pauses and is the steadier figure on a "
             "shared machine).", "",
             "| model | params (M) | size (MiB) | ms b=1 (student / teacher) | ms b=32 (student / teacher) | speedup b=1 | speedup b=32 | accuracy retained | cell min, wall / CPU (timed) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| teacher | {t['teacher_params'] / 1e6:.1f} | {t['teacher_mb']:.1f} | – | – | 1.00x | 1.00x | 100% | – |"]
    for r in rows:
        lines.append(f"| {r['method']} (n={r['n']}) | {r['student_params'] / 1e6:.1f} | {r['student_mb']:.1f} | "
                     f"{pair(r, '1', '.1f')} | {pair(r, '32', '.0f')} | "
                     f"{_x(r['speedup']['1'])} | {_x(r['speedup']['32'])} | {_pct(r['retained_pct'])} | {_cost(r)} |")
    return lines
