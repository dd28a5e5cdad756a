"""What an idle keep-alive client connection keeps (issue 20), checked on the objects.

A real ProxyServer on loopback, an origin beside it. After its requests are
answered, an idle ``_Client`` holds no parser, no exchange, no pipeline queue,
and no bytes or strings of its own: what it knows of its peer (address,
forwarding lines, limits keys) is one ``_Peer`` shared by every connection
from that address. scripts/bench/idle_conn_profile.py measures the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import pytest

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer, _Client

LOOPBACK = "127.0.0.1"
HOST = "idle.test"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Origin(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.Transport)
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(ANSWER)


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ProxyServer, int]]:
    loop = asyncio.get_running_loop()
    origin = await loop.create_server(_Origin, LOOPBACK, 0)
    origin_port = int(origin.sockets[0].getsockname()[1])
    route = Route(
        host=HOST,
        path_prefix="/",
        deployment="idle",
        port=80,
        status=RouteStatus.RUNNING,
        backends=(Backend("idle-0", LOOPBACK, origin_port),),
    )
    # Loopback limited like any client, so that its limits keys are in use.
    options = ProxyOptions(rate_limit_exempt=(), rate_limit_rps=1e6, rate_limit_burst=10**6)
    server = ProxyServer(options, RoutingTable.build([route]))
    server.keep_parsers_upto = 0  # as if the server held many connections
    [(_, port)] = await server.start([(LOOPBACK, 0)])
    try:
        yield server, port
    finally:
        await server.stop(2.0)
        origin.close()


async def _answers(reader: asyncio.StreamReader, n: int) -> list[bytes]:
    heads = []
    for _ in range(n):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        heads.append(head.split(b"\r\n")[0])
    return heads


def _get(host: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


async def _until(check: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (callable(check) and check()):
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _owned(client: _Client, shared: list[object]) -> dict[str, object]:
    """The slots of ``client`` holding an object of its own (not a flag, not shared)."""
    owned = {}
    for name in _Client.__slots__:
        value = getattr(client, name)
        if value is None or isinstance(value, bool | int | float):
            continue
        if any(value is s for s in shared):
            continue
        owned[name] = value
    return owned


async def test_an_idle_client_keeps_nothing_of_its_own(proxy: tuple[ProxyServer, int]) -> None:
    server, port = proxy
    conns = [await asyncio.open_connection(LOOPBACK, port) for _ in range(3)]
    try:
        (r1, w1), (r2, w2), (r3, w3) = conns
        w1.write(_get(HOST))  # proxied to the origin
        w2.write(_get("nobody.test"))  # answered by the proxy itself: 404
        w3.write(_get(HOST) + _get(HOST) + _get("nobody.test"))  # pipelined
        assert await _answers(r1, 1) == [b"HTTP/1.1 200 OK"]
        assert await _answers(r2, 1) == [b"HTTP/1.1 404 Not Found"]
        assert await _answers(r3, 3) == [b"HTTP/1.1 200 OK"] * 2 + [b"HTTP/1.1 404 Not Found"]
        clients = list(server._clients)
        assert len(clients) == 3
        await _until(lambda: all(c._parser is None and c._active is None for c in clients))
        peer = clients[0]._peer
        assert peer.ip == LOOPBACK and peer.rate_key == LOOPBACK  # limited, as asked
        deadlines = server._deadlines
        assert deadlines is not None and len(deadlines) == 3  # each its keep-alive deadline
        for client in clients:
            # One _Peer per address: its strings and forwarding lines are shared.
            assert client._peer is peer
            assert client.deadline_queue is not None  # the keep-alive deadline
            shared = [
                server,
                client._options,
                deadlines,
                client.transport,  # uvloop's or asyncio's, not ours
                peer,
                client.deadline_queue,  # one per delay, shared by all
            ]
            # Fails if an idle client keeps a parser, an exchange, a pipeline
            # deque, or bytes/strings of its own (README: "Connections: idle
            # memory and handshakes"; design.md: what an idle one costs).
            assert _owned(client, shared) == {}
        # The object itself stays small: each slot is 8 bytes on every idle
        # connection (192 bytes with the GC header: 20 slots).
        assert len(_Client.__slots__) <= 20, "a new slot on every idle connection: needed?"
        assert sys.getsizeof(clients[0]) <= 192
    finally:
        for _, writer in conns:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    await _until(lambda: not server._clients)
    assert not server._deadlines or len(server._deadlines) == 0


async def test_peers_are_shared_per_address_and_scheme_only(
    proxy: tuple[ProxyServer, int],
) -> None:
    server, port = proxy
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=("127.0.0.2", 0))
    try:
        writer.write(_get(HOST))
        assert await _answers(reader, 1) == [b"HTTP/1.1 200 OK"]
        [client] = list(server._clients)
        peer = client._peer
        assert peer.ip == "127.0.0.2"
        assert peer.forwarded == (
            b"X-Forwarded-For: 127.0.0.2\r\nX-Real-IP: 127.0.0.2\r\nX-Forwarded-Proto: http\r\n"
        )
        assert server._peers[b"http"]["127.0.0.2"] is peer
        assert b"https" not in server._peers
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_idle_clients_drop_a_kept_parser_when_the_server_grows(
    proxy: tuple[ProxyServer, int],
) -> None:
    server, port = proxy
    server.keep_parsers_upto = 1
    r1, w1 = await asyncio.open_connection(LOOPBACK, port)
    conns = [w1]
    try:
        w1.write(_get(HOST))
        assert await _answers(r1, 1) == [b"HTTP/1.1 200 OK"]
        [first] = list(server._clients)
        await _until(lambda: first._active is None)
        assert first._parser is not None  # alone: it keeps its parser (CPU over memory)
        _, w2 = await asyncio.open_connection(LOOPBACK, port)  # now more than 1
        conns.append(w2)
        await _until(lambda: len(server._clients) == 2)
        assert first._parser is None  # idle since, it would have kept it for good
        w1.write(_get(HOST))  # and makes a new one for its next request
        assert await _answers(r1, 1) == [b"HTTP/1.1 200 OK"]
    finally:
        for writer in conns:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
