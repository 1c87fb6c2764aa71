"""Time the README's main command end to end on this machine and check its accuracy.

    python tools/bench_default.py [--repeats N] [--keep]

Runs `deepspeed hrkd_ds/train.py --deepspeed ds_configs/zero2.json` exactly as a user does, each
time into a fresh output directory with a fresh data/tokenizer cache (cold start: SentencePiece
training and tokenization included), with the progress bar off. Prints a table of wall times
(median over repeats), the per-domain test accuracy of teacher and student from results.json,
and the ratio of the median wall time to the 5-minute budget (last line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 300.0


def run_once(out: Path) -> tuple[float, dict]:
    cmd = ["deepspeed", "hrkd_ds/train.py", "--deepspeed", "ds_configs/zero2.json",
           f"output_dir={out}", f"data.cache_dir={out}/cache", "tracking.progress_bar=false"]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench_default: the main command failed with exit code {proc.returncode}")
    return wall, json.loads((out / "results.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the output directories")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hrkd-bench-"))
    walls, results = [], None
    try:
        for i in range(a.repeats):
            wall, results = run_once(root / f"run{i}")
            walls.append(wall)
            print(f"run {i + 1}/{a.repeats}: {wall:.1f} s", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    domains = [d for d in results["teacher"]["test"] if d != "average"]
    print(f"\nmachine: {os.cpu_count()} CPU cores; runs: {a.repeats}; wall s: {', '.join(f'{w:.1f}' for w in walls)}")
    print(f"{'model':<10}{'split':<6}" + "".join(f"{d:>13}" for d in domains + ["average"]))
    for role in ("teacher", "student"):
        for split in ("dev", "test"):
            accs = results[role][split]
            print(f"{role:<10}{split:<6}" + "".join(f"{accs[d]:>13.3f}" for d in domains + ["average"]))
    median = statistics.median(walls)
    print(f"median wall time: {median:.1f} s (budget {BUDGET_S:.0f} s)")
    print(f"wall_time_vs_5min_budget: {median / BUDGET_S:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
