"""Readers for the three on-disk formats; each returns a list of `Example` dicts.

Every bad input raises `UserError` with one line naming the file or config field, because a
data problem found an hour into a distributed run is far more expensive than one found here.
"""

from __future__ import annotations

import csv
import gzip
import html
import json
from pathlib import Path
from typing import Iterable, TypedDict

from hrkd_ds.errors import UserError

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
def _open_text(path: Path):
    """Plain or gzip-compressed UTF-8 text (the shipped sample is stored gzipped)."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


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
    with _open_text(path) as f:
        for line in f:
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
            out += [_example(t, "", label, domain, f"{path} review {i + 1}") for i, t in enumerate(parse_review_file(path))]
    return out


# ---------------------------------------------------------------- MNLI TSV (GLUE 12-col or 4-col)
def _tsv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows split on tab with no quote handling: MNLI text contains bare quotes."""
    with path.open(encoding="utf-8", newline="") as f:
        lines = [line.rstrip("\r\n") for line in f]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise UserError(f"{path}: empty file")
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise UserError(f"{path}: missing column {name!r} (header: {' '.join(header)})")
    return header.index(name)


def read_mnli(path: str | Path, domains: list[str] | None = None, labels: list[str] | None = None) -> list[Example]:
    """GLUE format (header with gold_label: label is the LAST column, as in GLUE dev files with
    label1..label5) or the 4-column `sentence1 sentence2 label genre` format; genres are domains."""
    p = _require_file(path, "data.path")
    header, rows = _tsv_rows(p)
    c_genre, c_s1, c_s2 = (_column(header, n, p) for n in ("genre", "sentence1", "sentence2"))
    c_label = -1 if "gold_label" in header else _column(header, "label", p)
    need = max(c_genre, c_s1, c_s2, c_label) + 1
    short = next((i for i, r in enumerate(rows) if len(r) < need), None)
    if short is not None:
        raise UserError(f"{p} line {short + 2}: {len(rows[short])} columns, expected at least {need}")
    _check_domains((r[c_genre] for r in rows), domains, str(p))
    keep = set(domains) if domains else None
    out = [
        _example(r[c_s1], r[c_s2], r[c_label], r[c_genre], f"{p} line {i + 2} column sentence1")
        for i, r in enumerate(rows)
        if keep is None or r[c_genre] in keep
    ]
    check_labels(out, labels or MNLI_LABELS, str(p))
    return out


# ---------------------------------------------------------------- generic table (CSV/TSV/JSONL)
def _table_records(p: Path) -> list[dict]:
    ext = p.suffix.lower()
    if ext in (".csv", ".tsv"):
        with p.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ","))
    if ext in (".jsonl", ".json"):
        with p.open(encoding="utf-8") as f:
            try:
                return [json.loads(line) for line in f if line.strip()]
            except json.JSONDecodeError as err:
                raise UserError(f"{p}: not valid JSON lines ({err.msg} at line {err.lineno})") from None
    raise UserError(f"data.path: unsupported extension {ext!r} for format 'table' ({p}); use .csv, .tsv or .jsonl")


def read_table(path: str | Path, cfg) -> list[Example]:
    """Any CSV/TSV/JSONL with the text, optional text-pair, label and domain columns named by cfg."""
    p = _require_file(path, "data.path")
    records = _table_records(p)
    cols = {"data.text_column": cfg.text_column, "data.label_column": cfg.label_column, "data.domain_column": cfg.domain_column}
    if cfg.text_pair_column:
        cols["data.text_pair_column"] = cfg.text_pair_column
    if not records:
        raise UserError(f"{p}: no rows")
    for field, col in cols.items():
        row = next((i for i, r in enumerate(records) if col not in r), None)
        if row is not None:
            raise UserError(f"{p} row {row + 1}: missing column {col!r} ({field})")
    _check_domains((str(r[cfg.domain_column]) for r in records), cfg.domains, str(p))
    keep = set(cfg.domains) if cfg.domains else None

    def text(r: dict, col: str) -> str:
        return "" if r.get(col) is None else str(r[col])

    out = [
        _example(text(r, cfg.text_column), text(r, cfg.text_pair_column) if cfg.text_pair_column else "", text(r, cfg.label_column),
                 text(r, cfg.domain_column), f"{p} row {i + 1} column {cfg.text_column!r}")
        for i, r in enumerate(records)
        if keep is None or str(r[cfg.domain_column]) in keep
    ]
    if cfg.labels:
        check_labels(out, cfg.labels, str(p))
    return out
