"""Requests held while a deployment swaps its only instance (stop-first, volumes).

A route with ``hold`` set and no backend means: the old instance has stopped
taking requests and its replacement is starting. Instead of 503, the proxy
parks each new request here until a routing table gives the route a backend
again (then the request is forwarded as if it had just arrived), or until
``proxy.pause_timeout_s`` passes (then 503 with ``Retry-After``). A table in
which the route is gone, or no longer held, releases the request too: it is
then answered as that table says (404, 503).

The set is plain data plus one timer per request; the server (server.py) owns
it and calls :meth:`HeldRequests.release` whenever it swaps tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from patrd.proxy.router import Route, RoutingTable

RETRY_AFTER_S = 5  # told to clients whose request waited past the bound


@dataclass(slots=True, eq=False)
class _Held:
    host: str  # normalized
    path: str
    on_route: Callable[[Route | None], None]  # the table changed: go on with this route
    on_timeout: Callable[[], None]
    alive: Callable[[], bool]  # false once the client went away or was answered
    timer: asyncio.TimerHandle | None = None


class HeldRequests:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._held: list[_Held] = []
        self.expired = 0  # answered 503 after waiting the whole bound

    def __len__(self) -> int:
        return len(self._held)

    def hold(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        path: str,
        on_route: Callable[[Route | None], None],
        on_timeout: Callable[[], None],
        alive: Callable[[], bool],
    ) -> None:
        held = _Held(host, path, on_route, on_timeout, alive)
        held.timer = loop.call_later(self.timeout_s, self._expire, held)
        self._held.append(held)

    def release(self, table: RoutingTable) -> None:
        """A new table: requests whose route has a backend (or changed) go on."""
        keep: list[_Held] = []
        ready: list[tuple[_Held, Route | None]] = []
        for held in self._held:
            if not held.alive():
                _cancel(held)
                continue
            route = table.lookup(held.host, held.path)
            if route is not None and route.hold and not route.backends:
                keep.append(held)
                continue
            _cancel(held)
            ready.append((held, route))
        self._held = keep
        for held, route in ready:
            if held.alive():
                held.on_route(route)

    def expire_all(self) -> None:
        """The proxy stops: everyone waiting gets the 503 now."""
        for held in list(self._held):
            _cancel(held)
            self._expire(held)

    def _expire(self, held: _Held) -> None:
        if held in self._held:
            self._held.remove(held)
        if held.alive():
            self.expired += 1
            held.on_timeout()


def _cancel(held: _Held) -> None:
    if held.timer is not None:
        held.timer.cancel()
        held.timer = None
