"""What the data tests import by name (a conftest is not importable by name: every test folder has one)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"  # the `shared` folder beside the repo root


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or a clean skip where the real data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path
