"""Summarise a reproduction grid: docs/RESULTS.md, docs/results/<slice>.json and .png, summary.json.

    python tools/results_table.py GRID_DIR [--md docs/RESULTS.md] [--out docs/results]
                                  [--compare hrkd:kd ...] [--n-boot 10000] [--seed 0] [--no-charts]

See hrkd_ds/analysis/results.py for the cell.json each cell needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrkd_ds.analysis.results import DEFAULT_COMPARE, write_results


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"expected A:B (e.g. hrkd:kd), got {text!r}")
    return a, b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid_dir", type=Path)
    ap.add_argument("--md", type=Path, default=Path("docs/RESULTS.md"))
    ap.add_argument("--out", type=Path, default=Path("docs/results"), help="per-slice JSON/PNG and summary.json")
    ap.add_argument("--compare", type=_pair, nargs="+", default=list(DEFAULT_COMPARE), help="method pairs A:B for A - B")
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-charts", action="store_true")
    args = ap.parse_args(argv)
    if not args.grid_dir.is_dir():
        print(f"error: grid dir {args.grid_dir} does not exist", file=sys.stderr)
        return 2
    summary = write_results(args.grid_dir, args.md, args.out, compare=args.compare, n_boot=args.n_boot,
                            seed=args.seed, charts=not args.no_charts)
    n = sum(len(s["cells"]) for s in summary["slices"])
    print(f"{n} finished cell(s) in {len(summary['slices'])} slice(s), {len(summary['missing'])} missing -> {args.md}, {args.out}/")
    for m in summary["missing"]:
        print(f"  missing: {m['cell']}: {m['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
