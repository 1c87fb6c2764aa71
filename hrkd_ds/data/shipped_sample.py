"""Where the shipped sample lives (a real slice of the Amazon reviews, see sample/SOURCE.md)."""

from __future__ import annotations

from pathlib import Path


def sample_dir() -> Path:
    """The shipped real Amazon slice; lets every example and the embedded default run offline."""
    return Path(__file__).resolve().parent / "sample"
