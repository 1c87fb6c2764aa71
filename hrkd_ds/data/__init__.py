"""Multi-domain data pipeline: readers -> splits -> tokenizer -> tokenized cache -> episodes.

The names below load on first use (PEP 562), so a tool that needs one small module (hrkd-predict
reads only collate.pad_rows) does not import `datasets` and the tokenizer stack with it."""

from __future__ import annotations

import importlib

_HOME = {
    "collate_episode": "collate", "TokenizedSplits": "multidomain", "tokenize_splits": "multidomain",
    "Example": "readers", "read_amazon": "readers", "read_mnli": "readers", "read_table": "readers",
    "sample_dir": "shipped_sample", "EpisodicDomainSampler": "sampler", "RawSplits": "splits",
    "load_splits": "splits", "build_tokenizer": "tokenizer",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
