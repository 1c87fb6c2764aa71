"""PNG of the domain weights per layer over training, read back from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_domain_weights(rows: list[dict[str, Any]], domains: list[str], path: str | Path) -> bool:
    """One panel per layer (0 = embeddings), one line per domain; False when nothing to plot."""
    rows = [r for r in rows if "weights" in r]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = len(rows[0]["weights"])
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, layers, figsize=(3.2 * layers, 3.0), sharey=True, squeeze=False)
    for layer in range(layers):
        ax = axes[0][layer]
        for d, name in enumerate(domains):
            ax.plot(steps, [r["weights"][layer][d] for r in rows], label=name)
        ax.axhline(1.0 / len(domains), color="grey", lw=0.6, ls="--")
        ax.set_title("embeddings" if layer == 0 else f"layer {layer}")
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("domain weight r")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return True
