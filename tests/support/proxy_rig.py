"""The proxy's test rig: recording upstreams on loopback and routing tables.

``Upstream`` is an aiohttp server that records what it sees; ``RawUpstream``
answers with canned bytes, to misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import aiohttp
import pytest
from aiohttp import web

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer
from tests.support.raw_http import LOOPBACK
from tests.support.waits import until

HOST = "app.test"
MiB = 1024 * 1024
Started = tuple[ProxyServer, int]  # a proxy and the port it listens on

# --- upstreams ----------------------------------------------------------------


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on an ephemeral port of 127.0.0.1: its runner (to clean up) and port."""
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    return runner, int(runner.addresses[0][1])


@contextlib.asynccontextmanager
async def proxies() -> AsyncIterator[Callable[[ProxyOptions, RoutingTable], Awaitable[Started]]]:
    """A starter of in-process proxies on 127.0.0.1 (an ephemeral port each), all
    stopped on exit."""
    started: list[ProxyServer] = []

    async def start(options: ProxyOptions, routes: RoutingTable) -> Started:
        proxy = ProxyServer(options, routes)
        [(_, port)] = await proxy.start([(LOOPBACK, 0)])
        started.append(proxy)
        return proxy, port

    try:
        yield start
    finally:
        for proxy in started:
            await proxy.stop(timeout=2.0)


class Upstream:
    """An aiohttp server that records what it sees."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.peers: set[int] = set()  # client ports seen: one per TCP connection
        self.hits: Counter[str] = Counter()
        self.headers: list[list[tuple[str, str]]] = []
        self.written = 0  # bytes /firehose has handed to its transport
        self.read = 0  # bytes /hold has read from its request
        self.runner: web.AppRunner | None = None

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername")[1])
        self.hits[request.path] += 1
        self.headers.append(list(request.headers.items()))
        return await handler(request)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/", self.hello)
        app.router.add_get("/hello", self.hello)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/big", self.big)
        app.router.add_get("/big-cl", self.big_cl)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/sleep", self.sleep)
        app.router.add_get("/nothing", self.nothing)
        app.router.add_get("/ws", self.websocket)
        app.router.add_route("*", "/any", self.hello)
        app.router.add_get("/firehose", self.firehose)
        app.router.add_post("/hold", self.hold)
        self.runner, self.port = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def backend(self) -> Backend:
        return Backend(instance=f"web-{self.name}", host=LOOPBACK, port=self.port)

    async def hello(self, request: web.Request) -> web.Response:
        return web.Response(text=f"hello from {self.name}")

    async def echo(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for chunk in request.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(128):  # 8 MiB
            await response.write(pattern(i, 64 * 1024))
        await response.write_eof()
        return response

    async def big_cl(self, request: web.Request) -> web.Response:
        return web.Response(body=b"".join(pattern(i, 64 * 1024) for i in range(128)))

    async def slow(self, request: web.Request) -> web.StreamResponse:
        ticks = int(request.query.get("ticks", "6"))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(ticks):
            await response.write(b"tick %d\n" % i)
            await asyncio.sleep(0.5)
        await response.write_eof()
        return response

    async def sleep(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=f"slept on {self.name}")

    async def nothing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def firehose(self, request: web.Request) -> web.StreamResponse:
        """Up to 256 MiB, as fast as the reader takes it."""
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"f" * (256 * 1024)
        for _ in range(1024):
            await response.write(chunk)
            self.written += len(chunk)
        await response.write_eof()
        return response

    async def hold(self, request: web.Request) -> web.Response:
        """Read one chunk, stall, then read the rest."""
        self.read += len(await request.content.readany())
        await asyncio.sleep(float(request.query.get("s", "2")))
        while chunk := await request.content.readany():
            self.read += len(chunk)
        return web.Response(text=f"read {self.read}")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo: " + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws


class RawUpstream:
    """An asyncio server answering with canned bytes, to misbehave on purpose.

    ``answer(n)`` gives the bytes for the n-th request (from 0) of a
    connection, or ``None`` to close the connection without answering.
    """

    def __init__(self, answer: Callable[[int], bytes | None], delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.connections = 0  # accepted so far
        self.open = 0  # open now
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            for n in range(100):
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(self.delay)
                data = self.answer(n)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
                if b"Connection: close" in data:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def backend(self) -> Backend:
        return Backend(instance="raw-0", host=LOOPBACK, port=self.port)


def pattern(i: int, size: int) -> bytes:
    return bytes([i % 251]) * size


def route(
    *backends: Backend,
    host: str = HOST,
    prefix: str = "/",
    status: RouteStatus = RouteStatus.RUNNING,
    deployment: str = "web",
) -> Route:
    return Route(
        host=host,
        path_prefix=prefix,
        deployment=deployment,
        port=8080,
        status=status,
        backends=tuple(backends),
    )


def table(*routes: Route) -> RoutingTable:
    return RoutingTable.build(routes)


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --- fixtures (registered for tests/integration by its conftest) -------------------

MakeUpstream = Callable[[str], Awaitable[Upstream]]
MakeProxy = Callable[..., Awaitable[tuple[ProxyServer, int]]]
MakeRaw = Callable[..., Awaitable[RawUpstream]]


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream | RawUpstream]]:
    """Upstreams started by a test; stopped after the proxies."""
    started: list[Upstream | RawUpstream] = []
    yield started
    for upstream in reversed(started):
        await upstream.stop()


@pytest.fixture
def make_upstream(upstreams: list[Upstream | RawUpstream]) -> MakeUpstream:
    async def make(name: str) -> Upstream:
        upstream = Upstream(name)
        await upstream.start()
        upstreams.append(upstream)
        return upstream

    return make


@pytest.fixture
def make_raw(upstreams: list[Upstream | RawUpstream]) -> MakeRaw:
    async def make(answer: Callable[[int], bytes | None], delay: float = 0.0) -> RawUpstream:
        upstream = RawUpstream(answer, delay)
        await upstream.start()
        upstreams.append(upstream)
        return upstream

    return make


# --- waits ---------------------------------------------------------------------------


class Counts(Protocol):
    def outstanding(self, host: str, port: int) -> int: ...


async def outstanding_becomes(proxy: Counts, port: int, n: int, timeout: float = 5.0) -> None:
    """Wait until ``n`` requests of ``proxy`` are outstanding at the upstream on ``port``."""
    await until(
        lambda: proxy.outstanding(LOOPBACK, port) == n,
        timeout,
        f"{n} outstanding at upstream :{port}",
        interval=0.02,
    )
