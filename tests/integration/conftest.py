"""Integration fixtures: a real patrd daemon on the real Docker engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Api, Daemon, force_cleanup


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Unique deployment names for this test; whatever is left in Docker is removed."""
    created: list[str] = []
    yield created
    force_cleanup(created)


@pytest.fixture
def new_name(names: list[str]):
    def make(prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    return make


@pytest.fixture
def daemon(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[Daemon]:
    """Stops before ``names`` cleans up, so the daemon never sees its containers vanish."""
    d = Daemon(tmp_path)
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[Api]:
    async with Api(daemon) as client:
        yield client
