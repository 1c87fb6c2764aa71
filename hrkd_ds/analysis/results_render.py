"""How a grid's results read: Markdown per slice (table, bootstrap lines, compression, holes) and
a bar chart per slice. The numbers come from results.py; nothing here computes a statistic."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from hrkd_ds.analysis.compression_summary import render_compression
from hrkd_ds.tracking.plots import save_figure


def slice_slug(sl: dict[str, Any]) -> str:
    """A file-name-safe name of a slice; a kept earlier grid's summary is named apart from its rerun."""
    raw = f"{sl['dataset']}-frac{sl['fraction']:g}-{sl['student']}" + ("-legacy" if sl.get("legacy") else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


def _pct(s: dict[str, Any] | None) -> str:
    if not s:
        return "–"
    if s["std"] is None:
        return f"{100 * s['mean']:.2f}"
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def _cell(acc: dict[str, Any] | None, flagged: int = 0) -> str:
    """An accuracy entry, with ⚑k when k runs are degenerate on that domain."""
    return _pct(acc) + (f" ⚑{flagged}" if flagged else "")


def _interval(bs: dict[str, Any] | None) -> str:
    return "–" if not bs else f"[{_pts(bs['lo'])}, {_pts(bs['hi'])}]"


def _registration(reg: dict[str, Any] | None) -> str:
    if not reg:  # a kept earlier grid's summary: no spec read it
        return "earlier grid"
    if reg["status"] == "pre-registered":
        chosen = f"; chosen on dev by {reg['selected']['rule']}{_selection_seeds(reg)}" if reg.get("selected") else ""
        return f"pre-registered ({reg['rule']}, {reg['date']}{chosen})"
    if "phase" in reg:
        return (f"earlier protocol (registered reading {reg['rule']} waits: {reg['cells_done']}/{reg['cells_needed']} "
                f"cells, {reg['seeds_needed']} seeds)")
    return "earlier protocol"


def _selection_seeds(reg: dict[str, Any]) -> str:
    """', seeds 1-3 its selection cells' when the choice read this slice's cells of the chosen method."""
    seeds = reg["selected"].get("selection_seeds") or []
    return f", seeds {', '.join(map(str, seeds))} its selection cells" if seeds else ""


def _by_run(flags: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in flags:
        out.setdefault(f"{f['method']} s{f['seed']}", []).append(f)
    return out


def render_degenerate_summary(slices: list[dict[str, Any]]) -> list[str]:
    """Every flagged run of the report in one list: which cells are near-constant classifiers."""
    lines = ["## Degenerate classifiers", "",
             "Runs that predict one class for > 90% of at least one domain's test examples (⚑ in the tables):", ""]
    flagged = [(sl, _by_run(sl["degenerate"])) for sl in slices if sl.get("degenerate")]
    for sl, runs in flagged:
        lines.append(f"- {sl['dataset']} {sl['fraction']:g} {sl['student']}: "
                     + ", ".join(f"{run} ({len(fl)}/{len(sl['domains'])} domains)" for run, fl in runs.items()))
    return lines + ([] if flagged else ["None."]) + [""]


def render_choices(choices: list[dict[str, Any]]) -> list[str]:
    """Each pre-registered dev-only choice (summary.json's `choices`, analysis/selection.py): what it
    chose, or how many of its cells it still waits for, and every candidate's dev means it read."""
    if not choices:
        return []
    lines = ["## Choices made on dev", "",
             "Each pre-registered choice of configs/reproduce/grid.yaml (`preregistration.<rule>.choose`), "
             "made from the student's dev average alone: the highest mean over the cells named; "
             "within the tie margin, the lowest declared cost (a cell's steps x its step's cost, kd = 1). "
             "No test number is read.", ""]
    for ch in choices:
        (datasets, fractions), students = ch["where"], ch["students"]
        state = (f"chose `{ch['method']}`" if ch["method"] else
                 f"not made yet: {ch['done']} of {ch['needed']} cells finished")
        lines += [f"**{ch['rule']}** ({', '.join(datasets)} {', '.join(fractions)}; students {', '.join(students)}; "
                  f"seeds {', '.join(map(str, ch['seeds']))}; ties within {ch['tie_pts']:g} pts): {state}.", "",
                  "| candidate | " + " | ".join(f"dev, `{st}`" for st in students) + " | dev, mean (read by the rule) "
                  "| cells | declared cost |", "|---|" + "---:|" * (len(students) + 3)]
        ranked = sorted(ch["candidates"], key=lambda c: -(c["mean"] if c["mean"] is not None else -1.0))
        for c in ranked:
            name = f"**`{c['method']}`**" if c["method"] == ch["method"] else f"`{c['method']}`"
            lines.append(f"| {name} | " + " | ".join(_pct_or_dash(c["by_student"].get(st)) for st in students)
                         + f" | {_pct_or_dash(c['mean'])} | {c['cells']} of {c['of']} | {c['cost']:g} |")
        lines.append("")
    return lines


def _pct_or_dash(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def render_comparisons(sl: dict[str, Any]) -> list[str]:
    """The slice's comparisons as one table: the example-only interval of the first protocol and
    protocol v2's seeds-and-examples interval side by side, on the seeds both methods have."""
    if not sl["comparisons"]:
        return []
    lines = [f"| {sl['split']} average | n (seeds) | Δ pts | 95% CI, examples only (first protocol) | P(Δ ≤ 0) | "
             "95% CI, seeds + examples (v2) | P(Δ ≤ 0), v2 | decided | per domain |",
             "|---|---|---:|---|---:|---|---:|---|---|"]
    for c in sl["comparisons"]:
        bs, hb = c["bootstrap"], c.get("hierarchical")
        name = f"{c['a']} − {c['b']}"
        if bs is None:
            lines.append(f"| {name} | 0 | – | no paired predictions | – | – | – | {_registration(c.get('registration'))} | – |")
            continue
        per_dom = ", ".join(f"{d} {_pts(v)}" for d, v in bs["per_domain"].items())
        lines.append(f"| {name} | {bs['n_pairs']} {c['seeds']} | **{_pts(bs['diff'])}** | {_interval(bs)} | {bs['p_le_0']:.4f} | "
                     f"{_interval(hb)} | {'–' if not hb else format(hb['p_le_0'], '.4f')} | "
                     f"{_registration(c.get('registration'))} | {per_dom} |")
    n_boot = sl["comparisons"][0]["bootstrap"]["n_boot"] if sl["comparisons"][0]["bootstrap"] else None
    if n_boot:
        lines += ["", f"(B = {n_boot} resamples each; runs paired by seed; examples resampled within each domain.)"]
    return lines


def render_slice(sl: dict[str, Any], chart: str | None = None) -> str:
    """Markdown for one slice: table, comparisons, degenerate runs, holes, warnings, chart link."""
    split, doms = sl["split"], sl["domains"]
    dev_col = split != "dev"  # the split choices may read, beside the one they may not
    dup = sl.get("duplicates")
    lines = [f"## {sl['dataset']} · train fraction {sl['fraction']:g} · student {sl['student']}", "",
             "| model | n | " + " | ".join(doms) + " | average |" + (" dev average |" if dev_col else "")
             + (" average, duplicates removed |" if dup else ""),
             "|---|---:|" + "---:|" * (len(doms) + 1 + dev_col + bool(dup))]
    if sl.get("legacy"):
        lines[0] += " · earlier grid"
        lines[2:2] = [f"*Kept from an earlier grid ({sl['legacy']}); dropped once a rerun of this slice has as many cells.*", ""]
    for r in sl["rows"]:
        acc, flags = r.get(split, {}), r.get("degenerate") or {}
        lines.append(f"| {r['model']} | {r['n']} | " + " | ".join(_cell(acc.get(k), flags.get(k, 0)) for k in [*doms, "average"]) + " |"
                     + (f" {_pct(r.get('dev', {}).get('average'))} |" if dev_col else "")
                     + (f" {_pct(r.get('test_dedup'))} |" if dup else ""))
    lines.append("")
    if dup:
        lines += [f"Duplicates removed: {dup['removed']} of the {dup['of']} test examples appear verbatim (normalised text) "
                  "in the training split these cells trained on; the last column re-scores the archived predictions without them.", ""]
    lines += render_comparisons(sl)
    if sl.get("degenerate"):
        lines += ["", "Degenerate runs (⚑: one class takes > 90% of a domain's test predictions; domain: share, class): "
                  + "; ".join(f"{run}: " + ", ".join(f"{f['domain']} {100 * f['share']:.1f}% c{f['class']}" for f in flags)
                              for run, flags in _by_run(sl["degenerate"]).items()) + "."]
    if sl.get("compression"):
        lines += ["", *render_compression(sl["compression"]), ""]
    if sl.get("domain_weights"):
        lines += ["", *render_domain_weights(sl["domain_weights"]), ""]
    for m, seeds in sl["incomplete_seeds"].items():
        lines.append(f"- {m}: no finished run for seed(s) {seeds}")
    for w in sl["warnings"]:
        lines.append(f"- warning: {w}")
    if chart:
        lines += ["", f"![{slice_slug(sl)}]({chart})"]
    return "\n".join(lines) + "\n"


_WEIGHT_COLUMNS = (("entropy", "entropy r_0"), ("top_entropy", "top: entropy"), ("top_max_weight", "top: max weight"),
                   ("top_easiest", "top: easiest"), ("top_jump", "top: jump"))
# graph.objective=meta runs log the held-out alignment A: Spearman of r with A (analysis/domain_weights.py)
_ALIGN_COLUMNS = (("align_corr", "r_0 ~ A"), ("top_align_corr", "top: r ~ A"))


def render_domain_weights(by_method: dict[str, dict[str, Any]]) -> list[str]:
    """What the graph did in each run that has one (tools/graph_study.py's measures, mean over seeds);
    where a run logged the meta objective's alignment A, how well the weights' ranking of domains follows A's;
    where the weights left 1/K, which domain took the most and how its accuracy moved against kd."""
    aligned = any(w.get(k) is not None for w in by_method.values() for k, _ in _ALIGN_COLUMNS)
    heavy = any("top_heaviest" in w for w in by_method.values())
    columns = _WEIGHT_COLUMNS + (_ALIGN_COLUMNS if aligned else ())
    headers = [h for _, h in columns] + (["top: heaviest (weight)", "its accuracy − kd"] if heavy else [])
    lines = ["Domain weights over the run (student stage, logged steps; mean over seeds): entropy / log K "
             "(1 = uniform 1/K), the top level's largest weight, the share of steps it sits on that "
             "level's easiest domain (over the steps where one domain holds it; – when the weights stay "
             "uniform), and its mean change between logged steps."
             + (" r ~ A: Spearman correlation over steps of the weights with the held-out alignment A that "
                "graph.objective=meta trains them on (+1: the weights rank the domains as A does)." if aligned else "")
             + (" Heaviest: the top level's domain with the largest mean weight, and the method's accuracy on "
                "it minus kd's, paired by seed (points)." if heavy else ""), "",
             "| model | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    for m, w in by_method.items():
        cells = ["–" if w.get(k) is None else f"{w[k]:.4f}" for k, _ in columns]
        if heavy:
            cells += [f"{w['top_heaviest']} ({w['top_heaviest_weight']:.3f})" if "top_heaviest" in w else "–",
                      f"{w['top_heaviest_vs_kd']:+.2f}" if "top_heaviest_vs_kd" in w else "–"]
        lines.append(f"| {m} (n={w['n']}) | " + " | ".join(cells) + " |")
    return lines


def render_markdown(slices: list[dict[str, Any]], missing: list[dict[str, str]], charts: dict[str, str] | None = None,
                    source: str = "", intro: str = "", choices: list[dict[str, Any]] | None = None) -> str:
    """The whole RESULTS.md; `intro` (hand-written Markdown) goes between the title and the tables."""
    charts = charts or {}
    n_cells = sum(len(s["cells"]) for s in slices)
    head = [
        "# Results", "",
        f"Generated by `tools/reproduce.py --report` (or `tools/results_table.py`){f' from `{source}`' if source else ''}: {n_cells} finished cell(s), "
        f"{len(missing)} missing or unfinished.",
        "Accuracy in %, mean ± sample standard deviation over seeds (n = runs; the teacher row counts "
        "each distinct teacher once). Δ = paired bootstrap of the difference in average-over-domains "
        "accuracy, runs paired by seed; two 95% intervals: the first protocol's (test examples resampled within "
        "each domain, the runs held fixed) and protocol v2's (seeds resampled, the same draw for both methods, "
        "then test examples within each domain), on the seeds both methods have (n). ⚑k: k runs of that row "
        "predict one class for > 90% of that domain. 'decided' says whether the comparison was pre-registered "
        "in configs/reproduce/grid.yaml before its cells ran, or decided with the earlier protocol.", "",
    ]
    if intro:
        head += [intro.strip(), ""]
    body = ["\n".join(render_choices(choices or []))] if choices else []
    body += [render_slice(s, charts.get(slice_slug(s))) for s in slices]
    tail = [*render_degenerate_summary(slices), "## Missing or unfinished cells", ""]
    if missing:
        tail += ["| cell | reason |", "|---|---|"] + [f"| {m['cell']} | {m['reason']} |" for m in missing]
    else:
        tail.append("None.")
    return "\n".join(head) + "\n" + "\n".join(body) + "\n" + "\n".join(tail) + "\n"


def plot_slice(sl: dict[str, Any], path: str | Path) -> None:
    """Grouped bars (domains + average) per model, error bars = std over seeds."""
    import matplotlib  # lazy: slow to import, and only the charts need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, groups = sl["split"], [*sl["domains"], "average"]
    rows = [r for r in sl["rows"] if r.get(split)]
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(groups)), 4.0))
    lows = []
    for i, r in enumerate(rows):
        acc = r[split]
        means = [100 * acc[g]["mean"] if g in acc else math.nan for g in groups]
        errs = [100 * (acc[g]["std"] or 0.0) if g in acc else 0.0 for g in groups]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=errs, capsize=3, label=f"{r['model']} (n={r['n']})")
        lows += [m - e for m, e in zip(means, errs) if not math.isnan(m)]
    ax.set_xticks(x, groups)
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 5), 100)
    ax.set_title(f"{sl['dataset']} · fraction {sl['fraction']:g} · student {sl['student']}")
    ax.legend(fontsize="small", ncol=min(len(rows), 4), loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
