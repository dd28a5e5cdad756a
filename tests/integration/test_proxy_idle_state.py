"""What an idle client connection keeps (issue 20), on real loopback sockets.

An idle keep-alive client drops its request parser when the server holds
more than ``keep_parsers_upto`` connections, and its timeouts are deadlines
in the server's queues (patrd/proxy/deadlines.py), not a timer each.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer

# serial: idle-time windows (scripts/test runs these alone, after the parallel part).
pytestmark = pytest.mark.serial

LOOPBACK = "127.0.0.1"
HOST = "idle.test"


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with its method, path and body length (keep-alive)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            answer = f"{method} {path} {len(body)}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(answer), answer))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def origin() -> AsyncIterator[int]:
    server = await asyncio.start_server(_origin, LOOPBACK, 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def _proxy(origin: int, options: ProxyOptions | None = None) -> tuple[ProxyServer, int]:
    route = Route(
        host=HOST,
        path_prefix="/",
        deployment="idle",
        port=80,
        status=RouteStatus.RUNNING,
        backends=(Backend("idle-0", LOOPBACK, origin),),
    )
    proxy = ProxyServer(options or ProxyOptions(), RoutingTable.build([route]))
    [(_, port)] = await proxy.start([(LOOPBACK, 0)])
    return proxy, port


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    assert head.startswith(b"HTTP/1.1 200 "), head
    return await reader.readexactly(length)


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


async def _eventually(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_idle_clients_drop_their_parser_and_answer_what_follows(origin: int) -> None:
    proxy, port = await _proxy(origin)
    proxy.keep_parsers_upto = 0  # as if the server held many connections
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(_get("/one"))
        assert await _answer(reader) == b"GET /one 0"
        [client] = list(proxy._clients)
        await _eventually(lambda: client._parser is None)
        # A request split over two reads, a body, then two pipelined at once.
        post = f"POST /two HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello".encode()
        writer.write(post[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(post[20:])
        assert await _answer(reader) == b"POST /two 5"
        writer.write(_get("/three") + _get("/four"))
        assert await _answer(reader) == b"GET /three 0"
        assert await _answer(reader) == b"GET /four 0"
        await _eventually(lambda: client._parser is None)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await proxy.stop(2.0)


async def test_few_clients_keep_their_parser(origin: int) -> None:
    proxy, port = await _proxy(origin)
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(_get("/one"))
        assert await _answer(reader) == b"GET /one 0"
        [client] = list(proxy._clients)
        await asyncio.sleep(0.05)
        assert client._parser is not None
    finally:
        writer.close()
        await proxy.stop(2.0)


async def test_idle_and_header_deadlines_close_connections(origin: int) -> None:
    options = ProxyOptions(idle_timeout_s=0.4, header_timeout_s=0.4)
    proxy, port = await _proxy(origin, options)
    try:
        idle_r, idle_w = await asyncio.open_connection(LOOPBACK, port)
        idle_w.write(_get("/idle"))
        assert await _answer(idle_r) == b"GET /idle 0"
        slow_r, slow_w = await asyncio.open_connection(LOOPBACK, port)
        slow_w.write(b"GET /slow HTTP/1.1\r\nHost: ")  # a head that never ends
        busy_r, busy_w = await asyncio.open_connection(LOOPBACK, port)
        started = time.monotonic()
        for i in range(6):  # kept busy past the timeouts: stays open
            busy_w.write(_get(f"/busy{i}"))
            assert await _answer(busy_r) == f"GET /busy{i} 0".encode()
            await asyncio.sleep(0.15)
        async with asyncio.timeout(5):
            assert await idle_r.read() == b""  # closed without a word
            assert await slow_r.read() == b""
        assert time.monotonic() - started < 3.0
        busy_w.write(_get("/still"))
        assert await _answer(busy_r) == b"GET /still 0"
        assert len(proxy._deadlines or ()) == 1  # only the busy one has a deadline
        for w in (idle_w, slow_w, busy_w):
            w.close()
    finally:
        await proxy.stop(2.0)
