"""Fixtures shared by the report's tests in this folder."""

from __future__ import annotations

import pytest
from results_fakes import make_grid


@pytest.fixture()
def grid(tmp_path):
    """The constructed grid of results_fakes.make_grid and its expected rows."""
    return make_grid(tmp_path)
