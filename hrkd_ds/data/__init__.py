"""Multi-domain data pipeline: readers -> splits -> tokenizer -> tokenized cache -> episodes."""

from __future__ import annotations

from pathlib import Path


def sample_dir() -> Path:
    """The shipped real Amazon slice (see sample/SOURCE.md); lets every example run offline."""
    return Path(__file__).resolve().parent / "sample"


from hrkd_ds.data.collate import collate_episode  # noqa: E402
from hrkd_ds.data.multidomain import TokenizedSplits, tokenize_splits  # noqa: E402
from hrkd_ds.data.readers import Example, read_amazon, read_mnli, read_table  # noqa: E402
from hrkd_ds.data.sampler import EpisodicDomainSampler  # noqa: E402
from hrkd_ds.data.splits import RawSplits, load_splits  # noqa: E402
from hrkd_ds.data.tokenizer import build_tokenizer  # noqa: E402

__all__ = [
    "sample_dir", "Example", "read_amazon", "read_mnli", "read_table", "RawSplits", "load_splits", "build_tokenizer",
    "TokenizedSplits", "tokenize_splits", "EpisodicDomainSampler", "collate_episode",
]
