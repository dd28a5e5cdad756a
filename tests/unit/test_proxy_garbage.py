"""A closed client connection is freed at once, not left to the cyclic GC.

A client's request parser holds bound methods of the client: a reference
cycle. Left in place after the connection closes, every connection (with its
TLS connection and BIOs over HTTPS) became cyclic garbage, about 11 objects,
and the proxy spent more CPU in gen-0 collections than in the rest of
``connection_lost`` (``scripts/bench/proxy --close``). The same holds for an
upstream connection and its response parser (a backend that closes after
each answer). With the collector off, a ``_Client`` or ``_Upstream`` still
among the tracked objects after its connection is lost is one that only the
collector would have freed.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator

import pytest

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer, _Client, _Upstream

LOOPBACK = "127.0.0.1"
HOST = "garbage.test"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSING_HOST = "closing.test"  # its origin closes each connection after one answer
CLOSING_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
CONNECTIONS = 20


class _Origin(asyncio.Protocol):
    def __init__(self, closing: bool = False) -> None:
        self.closing = closing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.Transport)
        if self.closing:
            self.transport.write(CLOSING_ANSWER)
            self.transport.close()
            return
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(ANSWER)


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ProxyServer, int]]:
    loop = asyncio.get_running_loop()
    origins = [
        await loop.create_server(functools.partial(_Origin, closing), LOOPBACK, 0)
        for closing in (False, True)
    ]
    routes = [
        Route(
            host=host,
            path_prefix="/",
            deployment=host,
            port=80,
            status=RouteStatus.RUNNING,
            backends=(Backend(f"{host}-0", LOOPBACK, int(origin.sockets[0].getsockname()[1])),),
        )
        for host, origin in zip((HOST, CLOSING_HOST), origins, strict=True)
    ]
    server = ProxyServer(ProxyOptions(), RoutingTable.build(routes))
    [(_, port)] = await server.start([(LOOPBACK, 0)])
    try:
        yield server, port
    finally:
        await server.stop(2.0)
        for origin in origins:
            origin.close()


def _alive() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, _Client | _Upstream))


async def test_closed_connections_leave_no_cyclic_garbage(
    proxy: tuple[ProxyServer, int],
) -> None:
    server, port = proxy
    gc.collect()
    gc.disable()
    try:
        assert _alive() == 0
        # Proxied to a pooled upstream, proxied to one closed after each
        # answer, and answered by the proxy itself (no route).
        for host, status in ((HOST, 200), (CLOSING_HOST, 200), ("nobody.test", 404)):
            for _ in range(CONNECTIONS):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.write(
                    f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                answer = await reader.read()
                assert answer.startswith(b"HTTP/1.1 %d" % status)
                writer.close()
                await writer.wait_closed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        # connection_lost takes them out of these; the pooled upstream stays.
        while server._clients or len(server._upstreams) > 1:
            assert loop.time() < deadline, "connections not lost"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the loop drops its last references to the transports
        assert _alive() == 1  # the pooled upstream connection
    finally:
        gc.enable()
