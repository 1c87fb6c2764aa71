"""The one reader of table files (CSV, TSV, JSON lines, Parquet), for training data
(data.format=table, data/readers.py) and for `hrkd-predict`'s input, plus the writer of its output.

Text is read as written: CSV/TSV cells stay strings (no "NA" -> NaN, no "007" -> 7), JSON values
keep their JSON types, so the rows written back are the rows read plus the new columns. A bad file
is one line naming it (and the line, where there is one): strict CSV (an unterminated quote or a
row of the wrong width), one JSON object per line, UTF-8 (optionally gzipped) text.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hrkd_ds.errors import UserError
from hrkd_ds.io import atomic_output

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")  # .json is JSON lines, as in data.format=table


def read_text(path: Path) -> str:
    """Whole file as UTF-8 text, gunzipped when named *.gz; a file that is neither is one line."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"{path}: not a valid gzip file ({err})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); is it a binary file?") from None


def csv_records(p: Path) -> list[dict]:
    """Strict CSV/TSV: an unterminated quote or a row of the wrong width names its line instead of
    swallowing the rest of the file into one field."""
    reader = csv.reader(io.StringIO(read_text(p), newline=""), delimiter="\t" if p.suffix.lower() == ".tsv" else ",", strict=True)
    rows, start = [], 0
    try:
        header = next(reader, [])
        start = reader.line_num
        for row in reader:
            if row and len(row) != len(header):
                raise UserError(f"{p} line {start + 1}: {len(row)} fields, the header has {len(header)}")
            if row:
                rows.append(dict(zip(header, row)))
            start = reader.line_num
    except csv.Error as err:
        raise UserError(f"{p} line {start + 1}: malformed CSV ({err}; an unterminated quote?)") from None
    return rows


def jsonl_records(p: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(read_text(p).split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{p} line {n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{p} line {n}: a JSON {type(row).__name__}, expected an object with the data columns")
        rows.append(row)
    return rows


def parquet_records(p: Path) -> list[dict]:
    try:
        return pq.read_table(p).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{p}: cannot read it as parquet ({str(err).splitlines()[0]})") from None


def read_records(path: str | Path) -> list[dict]:
    """The rows of a table file as dicts, by its suffix (one of SUFFIXES)."""
    p = Path(path)
    kind = table_kind(p, "input")
    if kind in (".csv", ".tsv"):
        return csv_records(p)
    if kind == ".parquet":
        return parquet_records(p)
    return jsonl_records(p)


def table_kind(path: str | Path, what: str) -> str:
    """The lower-case suffix, or a UserError naming `what` (e.g. "--output") and the accepted ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{what} {path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    return suffix


def read_frame(path: str | Path) -> pd.DataFrame:
    """A table file as a DataFrame of its rows as read (`read_records`), for predict's round trip."""
    p = Path(path)
    table_kind(p, "input")
    if not p.is_file():
        raise UserError(f"input file not found: {p}")
    if p.suffix.lower() == ".parquet":  # column types as stored
        try:
            frame = pq.read_table(p).to_pandas()
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{p}: cannot read it as parquet ({str(err).splitlines()[0]})") from None
    else:
        frame = pd.DataFrame.from_records(read_records(p))
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
