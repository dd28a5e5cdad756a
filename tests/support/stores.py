"""Shared fixtures over a real Store: SQLite in the test's tmp_path.

Registered for every test by tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from patrd.state.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An empty, migrated Store in ``tmp_path/patrd.db``; closed after the test."""
    s = await Store.open(tmp_path / "patrd.db")
    yield s
    await s.close()
