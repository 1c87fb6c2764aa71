"""Tokenize every split/domain once and cache the result on disk (shared by runs and ranks)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import datasets
from transformers import PreTrainedTokenizerBase

from hrkd_ds.data.splits import SPLITS, RawSplits, fingerprint

COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "label"]
_FORMAT_VERSION = "tok-1"


@dataclass
class TokenizedSplits:
    """Same shape as RawSplits; datasets hold input_ids, attention_mask, token_type_ids, label."""

    domains: list[str]
    labels: list[str]
    splits: dict[str, dict[str, datasets.Dataset]]
    cache_path: str = ""  # where it was loaded from ("" when not cached)
    # teacher.tokenizer: the teacher's own encoding of the same rows (data/teacher_encoding.py), else None
    teacher: Any = None

    @property
    def train_sizes(self) -> list[int]:
        return [len(self.splits["train"][d]) for d in self.domains]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """The whole backend (normalizer, model, post-processor) when fast; vocab + specials otherwise.
    Truncation/padding state is dropped: calling the tokenizer mutates it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        body = json.dumps(spec, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([type(tokenizer).__name__, tokenizer.all_special_ids, getattr(tokenizer, "do_lower_case", None)])
    return hashlib.sha256((body + extra).encode("utf-8")).hexdigest()


def cache_key(raw: RawSplits, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> str:
    # datasets' version is in the key: an older datasets cannot read a newer one's saved features
    # (5.x -> 3.0: "TypeError: must be called with a dataclass type or instance" in load_from_disk).
    parts = [_FORMAT_VERSION, f"datasets-{datasets.__version__}", raw.fingerprint or fingerprint(raw), tokenizer_fingerprint(tokenizer), str(max_seq_len)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def _encode_fn(tokenizer: PreTrainedTokenizerBase, max_seq_len: int, pairs: bool):
    def encode(batch: dict) -> dict:
        enc = tokenizer(batch["text"], batch["text_pair"] if pairs else None, truncation=True, max_length=max_seq_len,
                        return_token_type_ids=True, return_attention_mask=True)  # fmt: skip
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "token_type_ids": enc["token_type_ids"]}

    return encode


@contextmanager
def _quiet() -> Iterator[None]:
    """No per-domain progress bars (3 x K of them flood the logs); restores the caller's setting."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _tokenize(raw: RawSplits, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> datasets.DatasetDict:
    """Flat DatasetDict keyed `<split>_<domain index>` (domain names need not be path-safe)."""
    encode = _encode_fn(tokenizer, max_seq_len, raw.has_pairs)
    with _quiet():
        return _map_all(raw, encode)


def _map_all(raw: RawSplits, encode) -> datasets.DatasetDict:
    return datasets.DatasetDict({
        f"{s}_{i}": raw.splits[s][d].map(encode, batched=True, batch_size=1000, remove_columns=["text", "text_pair"],
                                          load_from_cache_file=False).select_columns(COLUMNS)
        for s in SPLITS for i, d in enumerate(raw.domains)
    })  # fmt: skip


def _unflatten(raw: RawSplits, flat: datasets.DatasetDict, path: str) -> TokenizedSplits:
    splits = {s: {d: flat[f"{s}_{i}"] for i, d in enumerate(raw.domains)} for s in SPLITS}
    return TokenizedSplits(domains=list(raw.domains), labels=list(raw.labels), splits=splits, cache_path=path)


def _save_atomic(flat: datasets.DatasetDict, final: Path) -> None:
    """Write to a temp dir beside `final`, then rename: a crash or a racing rank never leaves a
    half-written cache under the final name; losing the rename race keeps the winner's copy."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with _quiet():
            flat.save_to_disk(str(tmp))
        (tmp / "COMPLETE").write_text("ok\n")
        os.replace(tmp, final)
    except OSError:
        if not (final / "COMPLETE").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_splits(raw: RawSplits, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, cache_dir: str) -> TokenizedSplits:
    """Cached under `<cache_dir>/tokenized/<key>`, key = hash(data, tokenizer, max_seq_len);
    no padding here (collate pads per episode). cache_dir "" -> in memory, no cache."""
    if not cache_dir:
        return _unflatten(raw, _tokenize(raw, tokenizer, max_seq_len), "")
    final = Path(cache_dir) / "tokenized" / cache_key(raw, tokenizer, max_seq_len)
    if not (final / "COMPLETE").is_file():
        _save_atomic(_tokenize(raw, tokenizer, max_seq_len), final)
    return _unflatten(raw, datasets.load_from_disk(str(final)), str(final))
