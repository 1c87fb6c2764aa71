"""PNG plots read back from metrics.jsonl rows: domain weights here, the rest in report.py.

Figures are built with matplotlib's object API (no pyplot): nothing global to close, and
saving a PNG uses the Agg renderer whatever backend the process has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hrkd_ds.io import atomic_output


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """PNG written to a temp file and renamed: a reader never sees half an image."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def domain_weights_figure(rows: list[dict[str, Any]], domains: list[str]) -> Figure | None:
    """One panel per layer (0 = embeddings), one line per domain; None when nothing to plot."""
    rows = [r for r in rows if "weights" in r]
    if not rows:
        return None
    layers = len(rows[0]["weights"])
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(3.2 * layers, 3.0))
    axes = fig.subplots(1, layers, sharey=True, squeeze=False)[0]
    for layer, ax in enumerate(axes):
        for d, name in enumerate(domains):
            ax.plot(steps, [r["weights"][layer][d] for r in rows], label=name)
        ax.axhline(1.0 / len(domains), color="grey", lw=0.6, ls="--")
        ax.set_title("embeddings" if layer == 0 else f"layer {layer}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("domain weight r")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_domain_weights(rows: list[dict[str, Any]], domains: list[str], path: str | Path) -> bool:
    """Write `domain_weights_figure` to `path`; False when nothing to plot."""
    fig = domain_weights_figure(rows, domains)
    if fig is None:
        return False
    save_figure(fig, path)
    return True
