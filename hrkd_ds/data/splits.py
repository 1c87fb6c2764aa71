"""Train/dev/test per domain, deterministic across machines, processes and Python hash seeds.

Randomness comes only from numpy Generators seeded with (split_seed, crc32(domain), purpose),
so a domain's split does not change when other domains are added, removed or reordered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from dataclasses import dataclass, field

import datasets
import numpy as np

from hrkd_ds.data.readers import AMAZON_LABELS, MNLI_LABELS, Example, check_labels, read_amazon, read_mnli, read_table, read_table_splits
from hrkd_ds.data.shipped_sample import sample_dir
from hrkd_ds.errors import UserError

SPLITS = ("train", "dev", "test")
MNLI_DEV_SHARE = 10  # percent: per genre, the last 10% of the train file is dev (docs/METHOD.md, "Data splits")
_PURPOSE = {"split": 0, "fewshot": 1}
FEATURES = datasets.Features({"text": datasets.Value("string"), "text_pair": datasets.Value("string"), "label": datasets.Value("int64")})


@dataclass
class RawSplits:
    """split -> domain -> Dataset(text, text_pair, label:int); `labels` is the saved label order."""

    domains: list[str]
    labels: list[str]
    splits: dict[str, dict[str, datasets.Dataset]]
    fingerprint: str = field(default="")  # content hash, a cache key for tokenizer/tokenized data

    @property
    def has_pairs(self) -> bool:
        return any(any(t for t in ds["text_pair"]) for ds in self.splits["train"].values())


def _rng(seed: int, domain: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(domain.encode("utf-8")), _PURPOSE[purpose]])


def _count(fraction: float, n: int) -> int:
    """round half up: Python's banker's rounding would make split sizes surprising."""
    return int(fraction * n + 0.5)


def carve(n: int, fraction_dev: float, fraction_test: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shuffle; test = last round(ft*n), dev = the round(fd*n) before, train = the rest."""
    perm = rng.permutation(n)
    n_test, n_dev = _count(fraction_test, n), _count(fraction_dev, n)
    return perm[: n - n_test - n_dev], perm[n - n_test - n_dev : n - n_test], perm[n - n_test :]


def few_shot(labels: np.ndarray, fraction: float, num_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Positions kept: round(f * n_c) of every label c (at least 1), in their original order."""
    kept = [rng.permutation(idx)[: max(1, _count(fraction, idx.size))] for idx in (np.flatnonzero(labels == c) for c in range(num_labels)) if idx.size]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def _dataset(examples: list[Example], positions: np.ndarray, label_ids: dict[str, int]) -> datasets.Dataset:
    rows = [examples[i] for i in positions]
    return datasets.Dataset.from_dict(
        {"text": [r["text"] for r in rows], "text_pair": [r["text_pair"] for r in rows], "label": [label_ids[r["label"]] for r in rows]},
        features=FEATURES,
    )


def _by_domain(examples: list[Example], domains: list[str]) -> dict[str, np.ndarray]:
    names = np.array([e["domain"] for e in examples], dtype=object)
    return {d: np.flatnonzero(names == d) for d in domains}


def _domains(cfg, examples: list[Example]) -> list[str]:
    return list(cfg.domains) if cfg.domains else sorted({e["domain"] for e in examples})


# ---------------------------------------------------------------- per format
def _carved_splits(cfg, examples: list[Example], domains: list[str]) -> dict[str, dict[str, list[int]]]:
    """Amazon: one seeded shuffle per domain."""
    out: dict[str, dict[str, list[int]]] = {s: {} for s in SPLITS}
    for d, idx in _by_domain(examples, domains).items():
        tr, dv, te = carve(idx.size, cfg.dev_fraction, cfg.test_fraction, _rng(cfg.split_seed, d, "split"))
        out["train"][d], out["dev"][d], out["test"][d] = idx[tr], idx[dv], idx[te]
    return out


def _mnli_train_dev(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_train = idx.size * (100 - MNLI_DEV_SHARE) // 100
    return idx[:n_train], idx[n_train:]


def _append(pool: list[Example], extra: list[Example], domains: list[str]) -> dict[str, np.ndarray]:
    """Add a separately read split to the example pool; its positions per domain."""
    start = len(pool)
    pool += extra
    return {d: idx + start for d, idx in _by_domain(extra, domains).items()}


def _load_mnli(cfg) -> tuple[list[str], list[Example], dict]:
    labels = list(cfg.labels) or MNLI_LABELS
    pool = read_mnli(cfg.path, cfg.domains, labels)
    domains = _domains(cfg, pool)
    out: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    for d, idx in _by_domain(pool, domains).items():
        if not cfg.test_path:  # no test file: carve the test split from train first, keep file order for the rest
            _, _, te = carve(idx.size, 0.0, cfg.test_fraction, _rng(cfg.split_seed, d, "split"))
            out["test"][d] = idx[te]
            idx = np.setdiff1d(idx, idx[te])
        out["train"][d], out["dev"][d] = _mnli_train_dev(idx)
    if cfg.test_path:
        out["test"] = _append(pool, read_mnli(cfg.test_path, domains, labels, "data.test_path"), domains)
    return labels, pool, out


def _load_table(cfg) -> tuple[list[str], list[Example], dict]:
    """Dev and test come from the source when it has them (a saved DatasetDict, data.test_path),
    else they are carved from train."""
    parts = read_table_splits(cfg.path, cfg)
    pool = parts["train"]
    domains = _domains(cfg, pool)
    if cfg.test_path:
        if "test" in parts:
            raise UserError(f"data.test_path: {cfg.path} already has a test split; leave data.test_path empty")
        parts["test"] = read_table(cfg.test_path, _with_domains(cfg, domains), "data.test_path")
    out: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    fd, ft = (0.0 if s in parts else f for s, f in (("dev", cfg.dev_fraction), ("test", cfg.test_fraction)))
    for d, idx in _by_domain(pool, domains).items():
        tr, dv, te = carve(idx.size, fd, ft, _rng(cfg.split_seed, d, "split"))
        out["train"][d], out["dev"][d], out["test"][d] = idx[tr], idx[dv], idx[te]
    for s in ("dev", "test"):
        if s in parts:
            out[s] = _append(pool, parts[s], domains)
    labels = list(cfg.labels) or sorted({e["label"] for e in pool})
    return labels, pool, out


def _with_domains(cfg, domains: list[str]):
    return dataclasses.replace(cfg, domains=list(domains))


def _load_amazon(cfg) -> tuple[list[str], list[Example], dict]:

    labels = list(cfg.labels) or AMAZON_LABELS
    root = cfg.path or str(sample_dir() / "amazon")
    pool = read_amazon(root, cfg.domains, labels)
    return labels, pool, _carved_splits(cfg, pool, _domains(cfg, pool))


_LOADERS = {"amazon": _load_amazon, "mnli": _load_mnli, "table": _load_table}  # the data.format choices (tests/test_choices.py)


def load_splits(cfg) -> RawSplits:
    """DataConfig -> RawSplits; train_fraction (few-shot) touches train only, dev/test stay whole."""
    if not cfg.path and cfg.format != "amazon":
        raise UserError(f"data.path: required for format {cfg.format!r} (only 'amazon' has a shipped sample)")
    labels, pool, positions = _LOADERS[cfg.format](cfg)
    domains = list(positions["train"])
    if len(set(labels)) != len(labels):
        raise UserError(f"data.labels: duplicate label in {labels!r}")
    label_ids = {name: i for i, name in enumerate(labels)}
    check_labels(pool, labels, cfg.path or "shipped sample")
    splits: dict[str, dict[str, datasets.Dataset]] = {s: {} for s in SPLITS}
    for d in domains:
        tr = positions["train"][d]
        if not tr.size:
            raise UserError(f"data.path: domain {d!r} has no training examples left after the dev/test split "
                            f"({sum(len(positions[s][d]) for s in SPLITS)} in all); give it more data or lower data.dev_fraction/test_fraction")
        for split in ("dev", "test"):  # every evaluation reports each domain: an empty split has no accuracy
            if not len(positions[split][d]):
                raise UserError(f"data.path: domain {d!r} has no {split} examples ({len(tr)} train); give it more data, "
                                f"raise data.{split}_fraction or give data.test_path")
        if cfg.train_fraction < 1.0:
            y = np.array([label_ids[pool[i]["label"]] for i in tr], dtype=np.int64)
            tr = tr[few_shot(y, cfg.train_fraction, len(labels), _rng(cfg.split_seed, d, "fewshot"))]
        splits["train"][d] = _dataset(pool, tr, label_ids)
        splits["dev"][d] = _dataset(pool, positions["dev"][d], label_ids)
        splits["test"][d] = _dataset(pool, positions["test"][d], label_ids)
    raw = RawSplits(domains=domains, labels=labels, splits=splits)
    raw.fingerprint = fingerprint(raw)
    return raw


def fingerprint(raw: RawSplits) -> str:
    """Content hash (not datasets' random in-memory fingerprint) so caches survive restarts."""
    h = hashlib.sha256(repr((raw.domains, raw.labels)).encode("utf-8"))
    for split in SPLITS:
        for d in raw.domains:
            ds = raw.splits[split][d]
            h.update(f"\x1e{split}\x1d{d}\x1d{len(ds)}".encode("utf-8"))
            for col in ("text", "text_pair"):
                h.update("\x1f".join(ds[col]).encode("utf-8"))
            h.update(np.asarray(ds["label"], dtype=np.int64).tobytes())
    return h.hexdigest()


def describe(raw: RawSplits) -> dict[str, dict[str, int]]:
    """split -> domain -> size, for logs and the run's saved metadata."""
    return {s: {d: len(raw.splits[s][d]) for d in raw.domains} for s in SPLITS}


__all__ = ["RawSplits", "load_splits", "fingerprint", "describe", "carve", "few_shot", "SPLITS"]
