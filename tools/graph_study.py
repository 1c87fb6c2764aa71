"""Why do HRKD's domain weights jump, and what makes them meaningful? Runs graph variants on one
teacher and measures the weights' behaviour from each run's metrics.jsonl.

    python tools/graph_study.py --out runs/graph_study [--seeds 1,2] [trainer overrides ...]

Variants (distill stage only, one shared teacher): the trained graph with the paper's dropout 0.1;
trained without dropout; frozen at init (the reference release); frozen without dropout; the
KD baseline (uniform 1/K); and the residual GAT (`graph.residual`: trained, without dropout, frozen). Per variant it reports, over logged steps:
- jump: mean |r_t - r_(t-1)| of the embedding-level weights between consecutive logged steps;
- entropy: mean entropy of r over domains / log K (1 = uniform, 0 = one domain takes all);
- easiest: share of steps where the largest weight sits on the domain with the smallest loss;
- corr: mean Spearman correlation over steps between r_d and the domain's loss (negative: the
  graph moves weight to the domains it already fits best);
for the embedding level and, prefixed top_, for the last student layer (its loss: att + hid);
and the student's dev and test average. Writes <out>/graph_study.md and .json (atomically).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hrkd_ds.analysis.domain_weights import SUMMARY_META, summarize_run
from hrkd_ds.io import atomic_write_json, atomic_write_text
from hrkd_ds.stages.run_dir import stage_finished

REPO = Path(__file__).resolve().parents[1]  # the checkout: the trainer runs from here

# dropout spelled out in every variant: the paper's 0.1 was the default when the study ran, 0 is now
VARIANTS = {
    "trained (the paper's)": ["distill.method=hrkd", "graph.dropout=0.1"],
    "trained, dropout 0": ["distill.method=hrkd", "graph.dropout=0"],
    "frozen at init": ["distill.method=hrkd", "graph.dropout=0.1", "graph.trainable=false"],
    "frozen, dropout 0": ["distill.method=hrkd", "graph.trainable=false", "graph.dropout=0"],
    "kd (uniform 1/K)": ["distill.method=kd"],
    # graph.residual: each node keeps its own projection, so the weights can leave 1/K
    "residual": ["distill.method=hrkd", "graph.dropout=0.1", "graph.residual=true"],
    "residual, dropout 0": ["distill.method=hrkd", "graph.residual=true", "graph.dropout=0"],
    "residual, frozen": ["distill.method=hrkd", "graph.dropout=0.1", "graph.residual=true", "graph.trainable=false"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def train(args: list[str], log: Path) -> None:
    with open(log, "a") as f:
        rc = subprocess.call([sys.executable, "hrkd_ds/train.py", *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"graph_study: a run failed (exit {rc}); see {log}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/graph_study")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("overrides", nargs="*", help="trainer overrides for every run (e.g. --config is not taken here)")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"data.cache_dir={out / '.cache'}", "tracking.wandb_mode=disabled", "tracking.progress_bar=false",
              "distill_train.log_every=2", *a.overrides]
    teacher = out / "teacher"
    if not stage_finished(teacher, "teacher"):
        train([f"output_dir={teacher}", "stages=[teacher]", *common], out / "teacher.log")
    table = []
    for name, extra in VARIANTS.items():
        for seed in [int(s) for s in a.seeds.split(",")]:
            run = out / f"{slug(name)}-s{seed}"
            if not stage_finished(run, "student"):
                train([f"output_dir={run}", "stages=[distill]", f"teacher_from={teacher}", f"seed={seed}", *common, *extra],
                      out / f"{run.name}.log")
            res = json.loads((run / "results.json").read_text())["student"]
            stats = {k: v for k, v in (summarize_run(run) or {}).items() if k not in SUMMARY_META}
            table.append({"variant": name, "seed": seed, **stats, "dev": res["dev"]["average"], "test": res["test"]["average"]})
    atomic_write_json(out / "graph_study.json", table)
    keys = ("jump", "entropy", "max_weight", "easiest", "corr", "top_jump", "top_entropy", "top_max_weight",
            "top_easiest", "top_corr", "dev", "test")
    lines = ["| variant | seed | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for r in table:
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join("–" if r.get(k) is None else f"{r[k]:.3f}" for k in keys) + " |")
    atomic_write_text(out / "graph_study.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
