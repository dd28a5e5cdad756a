"""Bounded waits for tests: poll until true, or fail saying what was last seen
(and the daemon's log, when there is a daemon)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # daemon.py waits with these helpers too
    from tests.support.daemon import Api, Daemon


async def until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    what: str,
    daemon: Daemon | None = None,
    interval: float = 0.1,
    detail: Callable[[], object] | None = None,
) -> Any:
    """The first truthy value of ``predicate()`` (sync or async) within ``timeout`` seconds.

    Otherwise an AssertionError naming ``what``, the last value seen, ``detail()``
    when given, and the tail of ``daemon``'s log when one is given."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(_failure(what, timeout, last, detail, daemon))


def until_sync(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    daemon: Daemon | None = None,
    interval: float = 0.1,
    detail: Callable[[], object] | None = None,
) -> Any:
    """:func:`until` for code that cannot await (threads, a browser driver)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(_failure(what, timeout, last, detail, daemon))


def _failure(
    what: str,
    timeout: float,
    last: Any,
    detail: Callable[[], object] | None,
    daemon: Daemon | None,
) -> str:
    more = f"\n{detail()}" if detail is not None else ""
    tail = f"\n{daemon.log_tail()}" if daemon is not None else ""
    return f"{what} within {timeout}s: {last!r}{more}{tail}"


async def rolled_out(api: Api, name: str, revision: int) -> dict[str, Any] | None:
    """The deployment once ``revision`` is fully out and it is running."""
    code, dep = await api.call("GET", f"/v1/deployments/{name}")
    if code == 200 and dep["stable_revision"] == revision and dep["status"] == "running":
        return dict(dep)
    return None


async def issued_certificate(api: Api, domain: str, not_serial: str = "") -> dict[str, Any] | None:
    """The certificate of ``domain`` once it is issued (and is not serial ``not_serial``)."""
    certs = (await api.ok("GET", "/v1/certificates"))["certificates"]
    for c in certs:
        if c["domain"] == domain and c["status"] == "issued" and c["serial"] != not_serial:
            return dict(c)
    return None
