"""Multi-domain data pipeline: readers -> splits -> tokenizer -> tokenized cache -> episodes."""

from __future__ import annotations

from hrkd_ds.data.collate import collate_episode
from hrkd_ds.data.multidomain import TokenizedSplits, tokenize_splits
from hrkd_ds.data.readers import Example, read_amazon, read_mnli, read_table
from hrkd_ds.data.shipped_sample import sample_dir
from hrkd_ds.data.sampler import EpisodicDomainSampler
from hrkd_ds.data.splits import RawSplits, load_splits
from hrkd_ds.data.tokenizer import build_tokenizer

__all__ = [
    "sample_dir", "Example", "read_amazon", "read_mnli", "read_table", "RawSplits", "load_splits", "build_tokenizer",
    "TokenizedSplits", "tokenize_splits", "EpisodicDomainSampler", "collate_episode",
]
