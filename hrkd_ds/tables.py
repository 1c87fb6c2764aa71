"""Whole-file table I/O by suffix (CSV, TSV, JSON lines, Parquet) for `hrkd-predict`.

Text is read as written: CSV/TSV cells stay strings (no "NA" -> NaN, no "007" -> 7), JSON values
keep their JSON types, so the rows written back are the rows read plus the new columns.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hrkd_ds.errors import UserError
from hrkd_ds.io import atomic_output

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")  # .json is JSON lines, as in data.format=table


def table_kind(path: str | Path, what: str) -> str:
    """The lower-case suffix, or a UserError naming `what` (e.g. "--output") and the accepted ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{what} {path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    return suffix


def read_frame(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    kind = table_kind(p, "input")
    if not p.is_file():
        raise UserError(f"input file not found: {p}")
    try:
        if kind in (".csv", ".tsv"):
            frame = pd.read_csv(p, sep="\t" if kind == ".tsv" else ",", dtype=str, keep_default_na=False, na_filter=False)
        elif kind == ".parquet":
            frame = pd.read_parquet(p)
        else:
            frame = pd.read_json(p, lines=True, dtype=False, convert_dates=False)
    except (ValueError, OSError) as err:  # pandas' and pyarrow's parse errors are ValueErrors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{p}: cannot read it as {kind[1:]}: {reason}") from None
    if frame.empty:
        raise UserError(f"{p}: no rows")
    return frame


def write_frame(frame: pd.DataFrame, path: str | Path) -> None:
    """In the format of `path`'s suffix, atomically: a failed write leaves any old file intact."""
    kind = table_kind(path, "--output")
    with atomic_output(path) as tmp:
        if kind in (".csv", ".tsv"):
            frame.to_csv(tmp, sep="\t" if kind == ".tsv" else ",", index=False)
        elif kind == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
