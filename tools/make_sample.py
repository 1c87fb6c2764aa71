#!/usr/bin/env python3
"""Regenerate hrkd_ds/data/sample/amazon from the full Blitzer files.

Keeps the first N reviews of every `<domain>/<label>.review` in file order (no cherry-picking
of short reviews, so the sample stays honest), the same N everywhere, with N the largest value
<= --per-file whose total stored (gzipped) size fits --max-bytes. Records and the `<reviews>`
wrapper are copied byte for byte and stored as `<label>.review.gz` (deterministic gzip, mtime 0),
so the same reader parses the sample and the full data.

    python3 tools/make_sample.py /path/to/shared/data/amazon_review [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

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


def packed(recs: list[str]) -> bytes:
    """The sample file for these records, gzipped reproducibly (no name, mtime 0)."""
    return gzip.compress((HEAD + "".join(recs) + TAIL).encode("utf-8"), compresslevel=9, mtime=0)


def largest_n(recs: dict, per_file: int, max_bytes: int) -> int:
    """Largest N <= per_file whose gzipped files (first N records each) total <= max_bytes."""
    lo, hi = 0, min(per_file, *(len(r) for r in recs.values()))
    while lo < hi:  # total size grows with N: bisect
        mid = (lo + hi + 1) // 2
        if sum(len(packed(r[:mid])) for r in recs.values()) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        sys.exit("make_sample: not even one review per file fits in --max-bytes")
    return lo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="amazon_review dir with <domain>/<label>.review")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "hrkd_ds/data/sample/amazon"))
    ap.add_argument("--per-file", type=int, default=500)
    ap.add_argument("--max-bytes", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    files = [(d, lab) for d in DOMAINS for lab in LABELS]
    recs = {f: records(src / f[0] / f"{f[1]}.review") for f in files}
    n = largest_n(recs, args.per_file, args.max_bytes)
    total = 0
    for d, lab in files:
        data = packed(recs[(d, lab)][:n])
        (out / d).mkdir(parents=True, exist_ok=True)
        (out / d / f"{lab}.review").unlink(missing_ok=True)
        (out / d / f"{lab}.review.gz").write_bytes(data)
        total += len(data)
    print(f"wrote {n} reviews per file, {len(files)} files, {total} bytes to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
