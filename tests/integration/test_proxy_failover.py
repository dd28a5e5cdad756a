"""Failover (patrd/proxy/failover.py) on real loopback sockets.

A route of one live upstream and one instance that cannot be reached — a
closed port (refused) or a listener whose accept queue is full (SYNs dropped:
the connect times out, as for a node that is gone) — answers every request,
whatever its method; the dead instance is avoided once it failed. A request
whose bytes were sent before the backend reset is not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from patrd.proxy.router import Backend, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer
from tests.support.proxy_rig import (
    HOST,
    MakeProxy,
    MakeRaw,
    MakeUpstream,
    RawUpstream,
    Upstream,
    free_port,
    proxies,
    route,
    table,
)
from tests.support.raw_http import LOOPBACK, raw, status_of

N = 200  # requests per test


@pytest.fixture
async def make_proxy(upstreams: list[Upstream | RawUpstream]) -> AsyncIterator[MakeProxy]:
    """Proxies stopped before the upstreams (``upstreams`` is set up first)."""
    async with proxies() as start:

        async def make(
            routes: RoutingTable, options: ProxyOptions | None = None
        ) -> tuple[ProxyServer, int]:
            return await start(options or ProxyOptions(), routes)

        yield make


@pytest.fixture
def blackhole() -> Iterator[Backend]:
    """A loopback port that never completes a connection: a listener with a
    backlog of 0 whose queue is already full, so the kernel drops new SYNs."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(0)
    fill: list[socket.socket] = []
    for _ in range(4):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(listener.getsockname())
        fill.append(sock)
    yield Backend(instance="web-gone", host=LOOPBACK, port=listener.getsockname()[1])
    for sock in [*fill, listener]:
        sock.close()


def request(method: bytes, body: bytes = b"") -> bytes:
    return b"%b /echo HTTP/1.1\r\nHost: %b\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b" % (
        method,
        HOST.encode(),
        len(body),
        body,
    )


async def test_a_refused_instance_costs_no_request(
    make_upstream: MakeUpstream, make_proxy: MakeProxy
) -> None:
    live = await make_upstream("a")
    dead = Backend(instance="web-dead", host=LOOPBACK, port=free_port())
    proxy, port = await make_proxy(table(route(dead, live.backend())))
    statuses: Counter[int] = Counter()
    methods = (b"GET", b"POST", b"PUT", b"DELETE")
    for i in range(N):
        method = methods[i % len(methods)]
        answer = await raw(port, request(method, b"x" * (i % 3)))
        statuses[status_of(answer)] += 1
    assert statuses == {200: N}
    assert live.hits["/echo"] == N
    assert proxy.active_requests == 0
    assert proxy.outstanding(LOOPBACK, dead.port) == 0
    assert proxy.outstanding(LOOPBACK, live.port) == 0


async def test_an_unreachable_instance_is_tried_once_then_avoided(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, blackhole: Backend
) -> None:
    live = await make_upstream("a")
    options = ProxyOptions(upstream_connect_timeout_s=0.5)
    _, port = await make_proxy(table(route(blackhole, live.backend())), options)

    async def one(i: int) -> int:
        return status_of(await raw(port, request(b"POST" if i % 2 else b"GET", b"body")))

    started = time.monotonic()
    first = await asyncio.gather(*(one(i) for i in range(8)))  # some wait out the connect timeout
    rest = [await one(i) for i in range(N)]
    elapsed = time.monotonic() - started
    assert first == [200] * 8
    assert rest == [200] * N
    assert live.hits["/echo"] == N + 8
    # Marked down after its first timeout: the later requests never wait for it
    # (half of them would, 0.5 s each, if it were still picked).
    assert elapsed < 5, f"{elapsed:.1f}s: the unreachable instance was tried again"


async def test_only_dead_instances_is_still_502(make_proxy: MakeProxy, blackhole: Backend) -> None:
    dead = [Backend(instance=f"web-{i}", host=LOOPBACK, port=free_port()) for i in range(4)]
    options = ProxyOptions(upstream_connect_timeout_s=0.5)
    proxy, port = await make_proxy(table(route(*dead, blackhole)), options)
    for _ in range(3):
        started = time.monotonic()
        assert status_of(await raw(port, request(b"GET"))) == 502
        # At most three instances tried: never the blackhole's timeout twice.
        assert time.monotonic() - started < 1.4
    assert proxy.active_requests == 0
    assert all(proxy.outstanding(b.host, b.port) == 0 for b in [*dead, blackhole])


async def test_a_request_already_sent_is_not_sent_again(
    make_upstream: MakeUpstream, make_raw: MakeRaw, make_proxy: MakeProxy
) -> None:
    live = await make_upstream("a")
    # Reads the request head, then closes with the body unread: a reset after
    # the request's bytes went out.
    resets = await make_raw(lambda n: None)
    _, port = await make_proxy(table(route(live.backend(), resets.backend())))
    statuses: Counter[int] = Counter()
    for method in (b"POST", b"GET") * 10:
        statuses[status_of(await raw(port, request(method, b"payload")))] += 1
    # Round robin between the two: each request that reached the resetting
    # instance is a 502, none went on to the live one.
    assert statuses[502] == resets.connections > 0
    assert statuses[200] == live.hits["/echo"] == 20 - statuses[502]
