"""Peak memory and step time of the trainer under glibc's default allocator policy against a pinned
mmap threshold and periodic trimming (`train.malloc_mmap_threshold_kib`, `train.malloc_trim_every`;
hrkd_ds/allocator.py), side by side.

Each round runs the embedded default job (sample data, teacher stage then distillation, capped at
--steps steps each, no W&B) once per setting (--settings KIB:TRIM,...; the first is the baseline),
in turn, as whole trainer processes: what grows is
the process's heap, so nothing less than the real process measures it. Per setting: peak RSS
after the first logged window and at the end (the process's ru_maxrss, as metrics.jsonl logs it),
its growth per step, and the median step time of the logged windows after the first (from their
samples/s). Figures are medians over --rounds; the ratio columns are each setting's step time and
final peak RSS over the baseline's, the median of the within-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 4 * 16  # the default job's episode: 4 domains x batch_per_domain 16


def run_once(kib: int, trim: int, steps: int, out: Path) -> dict[str, float]:
    """One default job under this policy: its peak RSS (first window, end) and step time."""
    cmd = [sys.executable, "hrkd_ds/train.py", f"output_dir={out}", f"train.malloc_mmap_threshold_kib={kib}",
           f"train.malloc_trim_every={trim}",
           f"teacher_train.max_steps={steps}", f"distill_train.max_steps={steps}", "teacher_train.eval_every=100000",
           "distill_train.eval_every=100000", "tracking.wandb_mode=disabled", "tracking.progress_bar=false",
           "tracking.plot=false", "tracking.compression=false"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=3600)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("peak_mem_mb") and r.get("samples_per_s")]
    first, last = rows[0], rows[-1]
    step_s = [BATCH / r["samples_per_s"] for r in rows[1:]]
    after_first = 2 * steps - first["step"]  # both stages' steps after the first logged one
    return {"rss_first_mb": first["peak_mem_mb"], "rss_end_mb": last["peak_mem_mb"],
            "growth_mb_per_step": (last["peak_mem_mb"] - first["peak_mem_mb"]) / max(after_first, 1),
            "step_s": statistics.median(step_s)}


def label(kib: int, trim: int) -> str:
    threshold = f"mmap >= {kib} KiB" if kib else "dynamic mmap threshold"
    return threshold + (f", trim every {trim} steps" if trim else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="steps per stage (teacher, then distillation)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settings", default="0:0,1024:0,0:10", help="KIB:TRIM pairs; the first is the baseline")
    args = ap.parse_args(argv)
    settings = [tuple(int(x) for x in pair.split(":")) for pair in args.settings.split(",")]
    runs: dict[tuple[int, int], list[dict[str, float]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kib, trim in settings:
                runs[(kib, trim)].append(run_once(kib, trim, args.steps, Path(tmp) / f"r{r}-{kib}-{trim}"))
    base = runs[settings[0]]
    print(f"default job on the sample, {args.steps} teacher + {args.steps} distillation steps, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, median of {args.rounds} rounds")
    print("| allocator policy | peak RSS, first window (MB) | peak RSS, end (MB) | growth (MB/step) | s per step "
          "| step time vs first | end RSS vs first |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s, rs in runs.items():
        m = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        t = statistics.median(x["step_s"] / b["step_s"] for x, b in zip(rs, base))
        mem = statistics.median(x["rss_end_mb"] / b["rss_end_mb"] for x, b in zip(rs, base))
        print(f"| {label(*s)} | {m['rss_first_mb']:.0f} | {m['rss_end_mb']:.0f} | {m['growth_mb_per_step']:.2f} "
              f"| {m['step_s']:.3f} | {t:.2f}x | {mem:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
