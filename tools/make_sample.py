#!/usr/bin/env python3
"""Regenerate hrkd_ds/data/sample/amazon from the full Blitzer files.

Keeps the first N reviews of every `<domain>/<label>.review` in file order (no cherry-picking
of short reviews, so the sample stays honest), the same N everywhere, with N the largest value
<= --per-file whose total size fits --max-bytes. Records and the `<reviews>` wrapper are copied
byte for byte, so the same reader parses the sample and the full data.

    python3 tools/make_sample.py /path/to/shared/data/amazon_review [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DOMAINS = ("books", "dvd", "electronics", "kitchen")
LABELS = ("negative", "positive")
HEAD, TAIL = "<reviews>\n", "</reviews>\n"


def records(path: Path) -> list[str]:
    """Each `<review> ... </review>` block verbatim, including its newlines."""
    out, cur = [], None
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.strip() == "<review>":
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if line.strip() == "</review>":
                out.append("".join(cur))
                cur = None
    return out


def largest_n(sizes: list[np.ndarray], per_file: int, max_bytes: int) -> int:
    """Largest N with sum over files of (wrapper + first N records) <= max_bytes."""
    n_max = min(per_file, *(s.size for s in sizes))
    wrap = len(HEAD.encode()) + len(TAIL.encode())
    totals = sum(np.cumsum(s[:n_max]) for s in sizes) + wrap * len(sizes)
    fits = np.flatnonzero(totals <= max_bytes)
    if not fits.size:
        sys.exit("make_sample: not even one review per file fits in --max-bytes")
    return int(fits[-1]) + 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="amazon_review dir with <domain>/<label>.review")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "hrkd_ds/data/sample/amazon"))
    ap.add_argument("--per-file", type=int, default=250)
    ap.add_argument("--max-bytes", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    files = [(d, lab) for d in DOMAINS for lab in LABELS]
    recs = {f: records(src / f[0] / f"{f[1]}.review") for f in files}
    n = largest_n([np.array([len(r.encode()) for r in recs[f]]) for f in files], args.per_file, args.max_bytes)
    total = 0
    for d, lab in files:
        text = HEAD + "".join(recs[(d, lab)][:n]) + TAIL
        (out / d).mkdir(parents=True, exist_ok=True)
        (out / d / f"{lab}.review").write_text(text, encoding="utf-8")
        total += len(text.encode())
    print(f"wrote {n} reviews per file, {len(files)} files, {total} bytes to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
