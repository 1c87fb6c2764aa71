"""Readers for the three on-disk formats; each returns a list of `Example` dicts (the table
format may also return a dev/test split, from a saved `DatasetDict`).

Every bad input raises `UserError` with one line naming the file or config field, because a
data problem found an hour into a distributed run is far more expensive than one found here.
"""

from __future__ import annotations

import dataclasses
import html
import io
from pathlib import Path
from typing import Iterable, TypedDict

import datasets
import pyarrow as pa

from hrkd_ds.errors import UserError
from hrkd_ds.tables import SUFFIXES as TABLE_FILES, read_records, read_text

AMAZON_LABELS = ["negative", "positive"]  # fixed: the reference's order depended on the hash seed
MNLI_LABELS = ["contradiction", "entailment", "neutral"]


class Example(TypedDict):
    text: str
    text_pair: str  # "" for single-sentence tasks
    label: str
    domain: str


def _example(text: str, pair: str, label: str, domain: str, where: str) -> Example:
    if not text.strip():
        raise UserError(f"{where}: empty text")
    return Example(text=text, text_pair=pair, label=label, domain=domain)


def _require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what}: file not found: {p}")
    return p


def _check_domains(found: Iterable[str], requested: list[str] | None, source: str) -> None:
    """A requested domain with no examples is almost always a typo in data.domains."""
    present = set(found)
    missing = [d for d in requested or [] if d not in present]
    if missing:
        raise UserError(f"data.domains: domain {missing[0]!r} has no examples in {source} (found: {', '.join(sorted(present)) or 'none'})")


def check_labels(examples: list[Example], labels: list[str], source: str) -> None:
    """Reject labels outside the configured/fixed label set instead of silently growing it."""
    allowed = set(labels)
    bad = next((e["label"] for e in examples if e["label"] not in allowed), None)
    if bad is not None:
        raise UserError(f"{source}: unknown label {bad!r} (data.labels: {', '.join(labels)})")


# ---------------------------------------------------------------- Amazon (Blitzer, pseudo-XML)
def review_file(root: Path, domain: str, label: str) -> Path:
    """`<label>.review`, or its gzipped twin `<label>.review.gz`."""
    plain = root / domain / f"{label}.review"
    packed = plain.with_name(plain.name + ".gz")
    return packed if packed.is_file() and not plain.is_file() else plain


def parse_review_file(path: Path) -> list[str]:
    """review_text bodies in file order. Line-based because the files are not well-formed XML
    (bare `&`); lines are stripped and joined with spaces as HRKD does, then HTML entities such
    as `&quot;` are unescaped (the reference leaves them escaped; unescaping is cleaner for a
    tokenizer and changes nothing else)."""
    texts: list[str] = []
    body: list[str] | None = None
    for line in io.StringIO(read_text(path), newline=None):  # the line splitting of a text-mode file
        tag = line.strip()
        if tag == "<review_text>":
            body = []
        elif tag == "</review_text>":
            if body is None:
                raise UserError(f"{path}: </review_text> without <review_text> (review {len(texts) + 1})")
            texts.append(html.unescape(" ".join(body)).strip())
            body = None
        elif body is not None:
            body.append(tag)
    if body is not None:
        raise UserError(f"{path}: unterminated <review_text> (review {len(texts) + 1})")
    return texts


def amazon_domains(root: str | Path) -> list[str]:
    """Sub-directories holding at least one `<label>.review` file, sorted."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (any(p.glob("*.review")) or any(p.glob("*.review.gz"))))


def read_amazon(dir: str | Path, domains: list[str] | None = None, labels: list[str] | None = None) -> list[Example]:
    """`<dir>/<domain>/{negative,positive}.review`; [] / None domains -> every domain found."""
    root = Path(dir)
    if not root.is_dir():
        raise UserError(f"data.path: directory not found: {root}")
    labels = labels or AMAZON_LABELS
    found = amazon_domains(root)
    _check_domains(found, domains, str(root))
    out: list[Example] = []
    for domain in domains or found:
        for label in labels:
            path = _require_file(review_file(root, domain, label), f"data.path (domain {domain!r}, label {label!r})")
            texts = parse_review_file(path)
            if not texts:  # an empty file would silently drop the label, or the whole domain
                raise UserError(f"{path}: no <review_text> entries (domain {domain!r}, label {label!r})")
            out += [_example(t, "", label, domain, f"{path} review {i + 1}") for i, t in enumerate(texts)]
    return out


# ---------------------------------------------------------------- MNLI TSV (GLUE 12-col or 4-col)
def _tsv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows split on tab with no quote handling: MNLI text contains bare quotes."""
    lines = [line.rstrip("\r\n") for line in io.StringIO(read_text(path), newline="")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise UserError(f"{path}: empty file")
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise UserError(f"{path}: missing column {name!r} (header: {' '.join(header)})")
    return header.index(name)


def read_mnli(path: str | Path, domains: list[str] | None = None, labels: list[str] | None = None, field: str = "data.path") -> list[Example]:
    """GLUE format (header with gold_label: label is the LAST column, as in GLUE dev files with
    label1..label5) or the 4-column `sentence1 sentence2 label genre` format; genres are domains."""
    p = _require_file(path, field)
    header, rows = _tsv_rows(p)
    c_genre, c_s1, c_s2 = (_column(header, n, p) for n in ("genre", "sentence1", "sentence2"))
    c_label = -1 if "gold_label" in header else _column(header, "label", p)
    bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if bad is not None:  # a stray tab shifts every later column (and the label, read from the last)
        raise UserError(f"{p} line {bad + 2}: {len(rows[bad])} tab-separated columns, the header has {len(header)}")
    empty = next((i for i, r in enumerate(rows) if not r[c_genre].strip()), None)
    if empty is not None:
        raise UserError(f"{p} line {empty + 2}: empty genre")
    _check_domains((r[c_genre] for r in rows), domains, str(p))
    keep = set(domains) if domains else None
    out = [
        _example(r[c_s1], r[c_s2], r[c_label], r[c_genre], f"{p} line {i + 2} column sentence1")
        for i, r in enumerate(rows)
        if keep is None or r[c_genre] in keep
    ]
    check_labels(out, labels or MNLI_LABELS, str(p))
    return out


# ---------------------------------------------------------------- generic table
SAVED_SPLITS = {"train": ("train",), "dev": ("validation", "dev"), "test": ("test",)}  # ours: names in a DatasetDict


def _dataset_records(ds) -> list[dict]:
    """Rows of a datasets.Dataset; ClassLabel columns as their names, not their ids."""
    rows = ds.to_list()
    for col, feat in ds.features.items():
        if isinstance(feat, datasets.ClassLabel):
            for r in rows:
                r[col] = feat.int2str(r[col]) if r[col] is not None and r[col] >= 0 else None
    return rows


def _saved_splits(p: Path) -> dict[str, list[dict]]:
    """A directory written by Dataset.save_to_disk (-> train) or DatasetDict.save_to_disk (-> its
    train split, plus validation|dev -> dev and test -> test when present; other splits unused)."""
    try:
        saved = datasets.load_from_disk(str(p))
    except (OSError, ValueError, pa.ArrowException) as err:
        raise UserError(f"data.path: {p} is not a directory saved with datasets' save_to_disk ({str(err).splitlines()[0]})") from None
    if isinstance(saved, datasets.Dataset):
        return {"train": _dataset_records(saved)}
    out = {}
    for split, names in SAVED_SPLITS.items():
        found = [n for n in names if n in saved]
        if len(found) > 1:
            raise UserError(f"{p}: saved DatasetDict has both {found[0]!r} and {found[1]!r}; keep one as the {split} split")
        if found:
            out[split] = _dataset_records(saved[found[0]])
    if "train" not in out:
        raise UserError(f"{p}: saved DatasetDict has splits {', '.join(saved)}, none named 'train'")
    return out


def _table_sources(p: Path) -> dict[str, list[dict]]:
    """split -> raw records; a file is all train."""
    if p.is_dir():
        return _saved_splits(p)
    ext = p.suffix.lower()
    if ext not in TABLE_FILES:
        raise UserError(f"data.path: unsupported extension {ext!r} for format 'table' ({p}); use {', '.join(TABLE_FILES)} or a save_to_disk directory")
    return {"train": read_records(p)}


def _table_examples(records: list[dict], cfg, where: str) -> list[Example]:
    """Column and value checks shared by every table source; `where` names the file (and split)."""
    cols = {"data.text_column": cfg.text_column, "data.label_column": cfg.label_column, "data.domain_column": cfg.domain_column}
    if cfg.text_pair_column:
        cols["data.text_pair_column"] = cfg.text_pair_column
    if not records:
        raise UserError(f"{where}: no rows")
    for field, col in cols.items():
        row = next((i for i, r in enumerate(records) if col not in r), None)
        if row is not None:
            raise UserError(f"{where} row {row + 1}: missing column {col!r} ({field})")
    for field in ("data.label_column", "data.domain_column"):
        row = next((i for i, r in enumerate(records) if not _text(r, cols[field]).strip()), None)
        if row is not None:
            raise UserError(f"{where} row {row + 1}: empty value in column {cols[field]!r} ({field})")
    _check_domains((_text(r, cfg.domain_column) for r in records), cfg.domains, where)
    keep = set(cfg.domains) if cfg.domains else None
    out = [
        _example(_text(r, cfg.text_column), _text(r, cfg.text_pair_column) if cfg.text_pair_column else "", _text(r, cfg.label_column),
                 _text(r, cfg.domain_column), f"{where} row {i + 1} column {cfg.text_column!r}")
        for i, r in enumerate(records)
        if keep is None or _text(r, cfg.domain_column) in keep
    ]
    if cfg.labels:
        check_labels(out, cfg.labels, where)
    return out


def _text(r: dict, col: str) -> str:
    return "" if r.get(col) is None else str(r[col])


def _require_path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what}: not found: {p}")
    return p


def read_table_splits(path: str | Path, cfg) -> dict[str, list[Example]]:
    """split -> examples with the text, optional text-pair, label and domain columns named by cfg;
    a dev/test split (from a saved DatasetDict) must cover every train domain."""
    p = _require_path(path, "data.path")
    parts = _table_sources(p)
    train = _table_examples(parts.pop("train"), cfg, str(p) if len(parts) == 0 else f"{p} split 'train'")
    domains = list(cfg.domains) or sorted({e["domain"] for e in train})
    sub = dataclasses.replace(cfg, domains=domains)
    return {"train": train, **{s: _table_examples(r, sub, f"{p} split {s!r}") for s, r in parts.items()}}


def read_table(path: str | Path, cfg, field: str = "data.path") -> list[Example]:
    """One table (a file or a saved Dataset), e.g. data.test_path."""
    parts = read_table_splits(_require_path(path, field), cfg)
    if len(parts) > 1:
        raise UserError(f"{field}: {path} is a DatasetDict with splits; name it in data.path (its test split is used)")
    return parts["train"]
