"""Fixtures for the data-pipeline tests: the shipped sample, the optional full data, a small tokenizer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from data_helpers import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrkd_ds.config import DataConfig, TokenizerConfig  # noqa: E402


@pytest.fixture(scope="session")
def sample_raw():
    from hrkd_ds.data import load_splits

    return load_splits(DataConfig())


@pytest.fixture(scope="session")
def small_raw():
    """One domain of the sample: enough text for SentencePiece, fast to train on."""
    from hrkd_ds.data import load_splits

    return load_splits(DataConfig(domains=["kitchen"]))


@pytest.fixture(scope="session")
def tok_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tok_cache")


@pytest.fixture(scope="session")
def sample_tokenizer(sample_raw, tok_cache):
    from hrkd_ds.data import build_tokenizer

    return build_tokenizer(TokenizerConfig(vocab_size=800), sample_raw, str(tok_cache))
