"""report.md in a run directory: what a run did, read back from its metrics.jsonl rows and results.

One page a person can open after a run (or send around) instead of reading JSON lines: the loss
and its terms, dev accuracy per domain, the graph's domain weights and compare-aggregate ratios,
and the final table. The PNGs are returned so the caller can log them to W&B as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from matplotlib.figure import Figure

from hrkd_ds.io import atomic_write_text
from hrkd_ds.tracking.plots import domain_weights_figure, save_figure

PLOT_DIR = "report"  # PNGs go to <run_dir>/report/, next to report.md


def _term_value(value: dict[str, float] | list[dict[str, float]]) -> float:
    """A loss term as one number: mean over domains, summed over layers for layer-wise terms."""
    per_layer = value if isinstance(value, list) else [value]
    return sum(sum(layer.values()) / len(layer) for layer in per_layer)


def _panels(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n, height))
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _stage_panels(rows: list[dict[str, Any]], roles: list[str], key: str):
    """(figure, [(axis, role, that role's rows having `key`)]) for the stages with any; None without."""
    by_role = [(role, [r for r in rows if r.get("stage") == role and key in r]) for role in roles]
    by_role = [(role, kept) for role, kept in by_role if kept]
    if not by_role:
        return None
    fig, axes = _panels(len(by_role))
    return fig, [(ax, role, kept) for ax, (role, kept) in zip(axes, by_role)]


def loss_figure(rows: list[dict[str, Any]], roles: list[str]) -> Figure | None:
    """One panel per stage: the total loss and every term (domain mean, layer sum), log scale."""
    panels = _stage_panels(rows, roles, "loss")
    if panels is None:
        return None
    fig, axes = panels
    for ax, role, steps_rows in axes:
        steps = [r["step"] for r in steps_rows]
        ax.plot(steps, [r["loss"] for r in steps_rows], label="total", color="black", lw=1.6)
        for term in sorted({t for r in steps_rows for t in r.get("terms", {})}):
            kept = [r for r in steps_rows if term in r.get("terms", {})]
            ax.plot([r["step"] for r in kept], [_term_value(r["terms"][term]) for r in kept], label=term, lw=1.0)
        if all(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
            ax.set_yscale("log")
        ax.set_title(f"{role} loss")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def dev_accuracy_figure(rows: list[dict[str, Any]], domains: list[str], roles: list[str]) -> Figure | None:
    """One panel per stage, one line per domain (and the average, dashed) over the evaluations."""
    panels = _stage_panels(rows, roles, "eval")
    if panels is None:
        return None
    fig, axes = panels
    for ax, role, evals in axes:
        steps = [r["step"] for r in evals]
        for d in domains:
            ax.plot(steps, [r["eval"]["dev"][d] for r in evals], marker="o", ms=3, label=d)
        ax.plot(steps, [r["eval"]["dev"]["average"] for r in evals], color="black", ls="--", label="average")
        ax.set_title(f"{role} dev accuracy")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ratios_figure(rows: list[dict[str, Any]], domains: list[str]) -> Figure | None:
    """One panel per layer l >= 1, one line per domain: the compare-aggregate share the layer
    keeps of itself (ratio alpha[l, d, l]; the rest goes to the layers below). None without ratios."""
    rows = [r for r in rows if r.get("ratios")]
    if not rows:
        return None
    levels = len(rows[0]["ratios"])
    steps = [r["step"] for r in rows]
    fig, axes = _panels(levels, width=3.2, height=3.0)
    for level, ax in enumerate(axes, start=1):
        for d, name in enumerate(domains):
            ax.plot(steps, [r["ratios"][level - 1][d][level] for r in rows], label=name)
        ax.axhline(1.0 / (level + 1), color="grey", lw=0.6, ls="--")  # uniform over layers 0..l
        ax.set_title(f"layer {level}: share of itself")
        ax.set_xlabel("step")
    axes[0].set_ylabel("compare-aggregate ratio")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def results_table(results: dict[str, Any], domains: list[str], roles: list[str]) -> list[str]:
    """Markdown rows: one per stage and split, accuracy of the best-dev checkpoint."""
    lines = ["| model | split | " + " | ".join(domains) + " | average | best step |",
             "|" + "---|" * (len(domains) + 4)]
    for role in roles:
        block = results.get(role, {})
        name = f"{role} ({block['method']})" if "method" in block else role
        for split in ("dev", "test"):
            if split in block:
                accs = [f"{block[split].get(d, float('nan')):.4f}" for d in [*domains, "average"]]
                lines.append(f"| {name} | {split} | " + " | ".join(accs) + f" | {block.get('best_step', '')} |")
    return lines


def write_report(run_dir: str | Path, metrics_rows: list[dict[str, Any]], results: dict[str, Any], domains: list[str],
                 stage_roles: Iterable[str]) -> list[Path]:
    """Write <run_dir>/report.md and its PNGs (<run_dir>/report/*.png); return the PNG paths.

    `metrics_rows`: MetricsLog.rows() (all stages); `results`: results.json's dict;
    `stage_roles`: the stages to show, e.g. ("teacher", "student"). A plot with no data (a
    teacher-only run has no domain weights) is left out.
    """
    run_dir = Path(run_dir)
    roles = list(stage_roles)
    graph_rows = [r for r in metrics_rows if r.get("stage") in roles]
    sections = [
        ("Training loss", "loss.png", loss_figure(metrics_rows, roles),
         "Total loss and each term (mean over domains, summed over layers for layer-wise terms)."),
        ("Dev accuracy", "dev_accuracy.png", dev_accuracy_figure(metrics_rows, domains, roles),
         "Accuracy on each domain's dev split at every evaluation; dashed: the average over domains."),
        ("Domain weights", "domain_weights.png", domain_weights_figure(graph_rows, domains),
         "The domain-relational graph's weight for each domain per layer (dashed: uniform 1/K)."),
        ("Compare-aggregate ratios", "ratios.png", ratios_figure(graph_rows, domains),
         "How much of each layer's own prototype the hierarchical compare-aggregate step keeps "
         "(dashed: uniform over the layers so far)."),
    ]  # fmt: skip
    lines = [f"# Run report: {run_dir.name}", "", "## Results", "",
             "Accuracy of the checkpoint with the best average dev accuracy.", "",
             *results_table(results, domains, roles)]
    pngs: list[Path] = []
    for title, name, fig, caption in sections:
        if fig is None:
            continue
        pngs.append(save_figure(fig, run_dir / PLOT_DIR / name))
        lines += ["", f"## {title}", "", caption, "", f"![{title}]({PLOT_DIR}/{name})"]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return pngs
