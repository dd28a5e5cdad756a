"""Bounded waits for integration tests: poll until true, or fail with the daemon's log."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.daemon import Api, Daemon


async def until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    what: str,
    daemon: Daemon,
    interval: float = 0.1,
) -> Any:
    """The first truthy value of ``predicate()`` (sync or async) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} within {timeout}s: {last}\n{daemon.log_tail()}")


async def rolled_out(api: Api, name: str, revision: int) -> dict[str, Any] | None:
    """The deployment once ``revision`` is fully out and it is running."""
    code, dep = await api.call("GET", f"/v1/deployments/{name}")
    if code == 200 and dep["stable_revision"] == revision and dep["status"] == "running":
        return dict(dep)
    return None
