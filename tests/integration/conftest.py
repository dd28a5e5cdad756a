"""Integration fixtures: a real patrd daemon on the real Docker engine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from tests.support.bad_images import crash_image, unstartable_image  # noqa: F401 (fixtures)
from tests.support.daemon import Api, Daemon, force_cleanup, free_port, running_daemon
from tests.support.proxy_rig import make_raw, make_upstream, upstreams  # noqa: F401 (fixtures)
from tests.support.swarm import Swarm, swarm_cluster
from tests.support.swarm_patrd import swarm_daemon

# The proxy's own suites run on both event loops patrd supports
# (proxy.event_loop: uvloop in the workers by default, asyncio as the switch back).
_BOTH_LOOPS = {
    "test_proxy.py",
    "test_proxy_abuse.py",
    "test_proxy_trust.py",
    "test_proxy_failover.py",
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in _BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}  # one factory: test ids unchanged


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
    with running_daemon(tmp_path) as d:
        yield d


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[Api]:
    async with Api(daemon) as client:
        yield client


@pytest.fixture
def registry_daemon(
    tmp_path: Path, test_images: dict[str, str], names: list[str]
) -> Iterator[Daemon]:
    """A daemon running the node registry (generated credential, loopback ports)."""
    registry = {
        "enabled": True,
        "listen": f"127.0.0.1:{free_port()}",
        "webhook_listen": f"127.0.0.1:{free_port()}",
    }
    with running_daemon(tmp_path, {"registry": registry}) as d:
        yield d


@pytest.fixture
async def rapi(registry_daemon: Daemon) -> AsyncIterator[Api]:
    async with Api(registry_daemon) as client:
        yield client


@pytest.fixture(scope="module")
def swarm(test_images: dict[str, str]) -> Iterator[Swarm]:
    """A 3-node swarm of the module's own (tests/support/swarm.py), the test image on every node."""
    with swarm_cluster(3, images=(test_images["v1"],)) as cluster:
        print(f"\nswarm up: {cluster.timings}")
        yield cluster
    left = cluster.leftovers()
    assert not left, f"swarm teardown left {left}"


@pytest.fixture
async def swarm_api(swarm: Swarm, tmp_path: Path) -> AsyncIterator[tuple[Daemon, Api]]:
    """patrd on that swarm's manager (engine.backend = swarm) and its API client."""
    async with swarm_daemon(swarm, tmp_path) as pair:
        yield pair
