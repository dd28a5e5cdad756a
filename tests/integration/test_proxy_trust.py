"""The proxy at the trust boundary: timeouts after the head, path and Host
normalisation, forwarding headers. Raw sockets on loopback against real
upstreams (aiohttp apps that record what reaches them, and raw TCP servers
that stall on purpose). Timeouts are configured short; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.runtime import EventLoop, ProxyRuntime
from patrd.proxy.server import ProxyOptions, ProxyServer
from patrd.proxy.workers import ProxyWorkers
from tests.support.proxy_rig import outstanding_becomes, proxies, serve_on_loopback
from tests.support.raw_http import LOOPBACK, connection, next_response, raw, status_of
from tests.support.waits import until

# serial: timeout windows (scripts/test runs these alone, after the parallel part).
pytestmark = pytest.mark.serial

OTHER = "127.0.0.2"
HOST = "app.test"
SHORT = 0.5  # the timeouts under test (seconds)
# Other timeouts stay out of the way of the one under test.
OPTIONS = {
    "rate_limit_rps": 0.0,
    "body_timeout_s": 30.0,
    "upstream_header_timeout_s": 30.0,
    "upstream_idle_timeout_s": 30.0,
    "send_timeout_s": 30.0,
}


class App:
    """An aiohttp upstream recording the raw target and headers of each request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.websocket)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner, self.port = await serve_on_loopback(app)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.raw_path, dict(request.headers)))
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=f"{self.name} {request.raw_path} {len(body)}\n")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo: " + msg.data)
        return ws

    def targets(self) -> list[str]:
        return [target for target, _ in self.seen]


class Staller:
    """A raw TCP upstream: reads a request head, writes ``answer`` (maybe nothing), stalls."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.answer:
                writer.write(self.answer)
            await reader.read()  # until the proxy closes

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def route(port: int, prefix: str = "/", name: str = "web", **extra: object) -> Route:
    return Route(
        host=HOST,
        path_prefix=prefix,
        deployment=name,
        port=80,
        status=RouteStatus.RUNNING,
        backends=(Backend(instance=f"{name}-0", host=LOOPBACK, port=port),),
        **extra,  # type: ignore[arg-type]
    )


MakeProxy = Callable[..., Awaitable[tuple[ProxyServer, int]]]


@pytest.fixture
async def make_proxy() -> AsyncIterator[MakeProxy]:
    async with proxies() as start:

        async def make(routes: list[Route], **options: object) -> tuple[ProxyServer, int]:
            merged = ProxyOptions(**{**OPTIONS, **options})  # type: ignore[arg-type]
            return await start(merged, RoutingTable.build(routes))

        yield make


@pytest.fixture
async def apps() -> AsyncIterator[Callable[[str], Awaitable[App]]]:
    made: list[App] = []

    async def make(name: str) -> App:
        app = App(name)
        await app.start()
        made.append(app)
        return app

    yield make
    for app in made:
        assert app.runner is not None
        await app.runner.cleanup()


@pytest.fixture
async def stallers() -> AsyncIterator[Callable[[bytes], Awaitable[Staller]]]:
    made: list[Staller] = []

    async def make(answer: bytes = b"") -> Staller:
        staller = Staller(answer)
        await staller.start()
        made.append(staller)
        return staller

    yield make
    for staller in made:
        await staller.stop()


def get(target: str, host: str = HOST, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


# --- timeouts after the head ------------------------------------------------------------


async def test_trickling_body_is_408_within_the_body_timeout(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    proxy, port = await make_proxy([route(app.port)], body_timeout_s=SHORT)
    async with connection(port) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nab")
        started = time.monotonic()
        # A byte now and then, each gap shorter than the timeout: still reading.
        for _ in range(4):
            await asyncio.sleep(SHORT / 4)
            writer.write(b"c")
        # Then silence.
        status, headers, body = await next_response(reader, 10)
        elapsed = time.monotonic() - started
        assert status == 408
        assert headers["connection"] == "close"
        assert b"request body" in body
        assert SHORT + SHORT * 0.9 <= elapsed < SHORT + SHORT + 3
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    assert proxy.timeouts["body"] == 1
    assert proxy.active_requests == 0
    assert app.seen == []  # the incomplete request got no answer from the app


async def test_slow_but_steady_body_is_proxied(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    proxy, port = await make_proxy([route(app.port)], body_timeout_s=SHORT)
    async with connection(port) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):  # 8 gaps of SHORT/4: longer than the timeout in all
            await asyncio.sleep(SHORT / 4)
            writer.write(b"x")
        status, _, body = await next_response(reader, 10)
        assert (status, body) == (200, b"web /upload 8\n")
    assert proxy.timeouts["body"] == 0


async def test_upstream_that_never_answers_is_504(
    stallers: Callable[[bytes], Awaitable[Staller]], make_proxy: MakeProxy
) -> None:
    staller = await stallers(b"")
    proxy, port = await make_proxy([route(staller.port)], upstream_header_timeout_s=SHORT)
    started = time.monotonic()
    response = await raw(port, get("/slow"), timeout=10)
    elapsed = time.monotonic() - started
    assert status_of(response) == 504
    assert b"did not answer in time" in response
    assert SHORT * 0.9 <= elapsed < SHORT + 3
    assert staller.requests == 1
    assert proxy.timeouts["upstream_header"] == 1
    await outstanding_becomes(proxy, staller.port, 0)


async def test_504_keeps_the_client_connection(
    stallers: Callable[[bytes], Awaitable[Staller]],
    apps: Callable[[str], Awaitable[App]],
    make_proxy: MakeProxy,
) -> None:
    staller = await stallers(b"")
    app = await apps("web")
    _, port = await make_proxy(
        [route(app.port), route(staller.port, "/stall", "stall")], upstream_header_timeout_s=SHORT
    )
    async with connection(port) as (reader, writer):
        writer.write(b"GET /stall HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert (await next_response(reader, 10))[0] == 504
        writer.write(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
        status, _, body = await next_response(reader, 10)
        assert (status, body) == (200, b"web /after 0\n")


async def test_a_url_may_set_its_own_upstream_timeout(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    proxy, port = await make_proxy(
        [route(app.port), route(app.port, "/poll", "poll", timeouts=(0.0, 5.0, 0.0, 0.0))],
        upstream_header_timeout_s=SHORT,
    )
    slow = f"?delay={SHORT * 2}"
    assert status_of(await raw(port, get("/poll" + slow), timeout=10)) == 200
    assert status_of(await raw(port, get("/other" + slow), timeout=10)) == 504
    assert proxy.timeouts["upstream_header"] == 1


async def test_worker_processes_report_timeouts_and_carry_url_timeouts(
    stallers: Callable[[bytes], Awaitable[Staller]], apps: Callable[[str], Awaitable[App]]
) -> None:
    """Options and a route's own timeouts cross to the workers; their counters come back."""
    staller = await stallers(b"")
    app = await apps("web")
    options = ProxyOptions(**{**OPTIONS, "upstream_header_timeout_s": SHORT})  # type: ignore[arg-type]
    proxy = ProxyWorkers(options, ProxyRuntime(EventLoop.UVLOOP, 2), log_level="warning")
    proxy.set_table(
        RoutingTable.build(
            [
                route(staller.port),
                route(app.port, "/poll", "poll", timeouts=(0.0, 5.0, 0.0, 0.0)),
            ]
        )
    )
    [(_, port)] = await proxy.start([(LOOPBACK, 0)])
    try:
        await until(lambda: proxy.synced, 10, "workers synced", interval=0.02)
        assert status_of(await raw(port, get("/stall"), timeout=10)) == 504
        assert status_of(await raw(port, get(f"/poll?delay={SHORT * 2}"), timeout=10)) == 200
        await proxy.refresh_stats()
        assert proxy.timeouts["upstream_header"] == 1
        assert proxy.timeouts["body"] == 0
    finally:
        await proxy.stop(timeout=2.0)


async def test_stalled_response_body_is_cut(
    stallers: Callable[[bytes], Awaitable[Staller]], make_proxy: MakeProxy
) -> None:
    staller = await stallers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    proxy, port = await make_proxy([route(staller.port)], upstream_idle_timeout_s=SHORT)
    started = time.monotonic()
    response = await raw(port, get("/stream"), timeout=10)
    elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"partial")  # cut: the client sees a short body
    assert SHORT * 0.9 <= elapsed < SHORT + 3
    assert proxy.timeouts["upstream_idle"] == 1


async def test_client_that_does_not_read_is_cut(
    stallers: Callable[[bytes], Awaitable[Staller]], make_proxy: MakeProxy
) -> None:
    size = 64 * 1024 * 1024
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * (8 * 1024 * 1024)
    staller = await stallers(big)
    proxy, port = await make_proxy([route(staller.port)], send_timeout_s=SHORT)
    async with connection(port, limit=1024) as (_, writer):
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(get("/big"))
        await until(lambda: proxy.timeouts["send"] == 1, 10, "a send timeout", interval=0.02)
    assert proxy.timeouts["upstream_idle"] == 0
    await outstanding_becomes(proxy, staller.port, 0)


async def test_idle_websocket_is_closed_after_idle_timeout(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    # The request timeouts are short too: they must not apply after the upgrade.
    proxy, port = await make_proxy(
        [route(app.port)],
        idle_timeout_s=1.5,
        upstream_header_timeout_s=SHORT,
        upstream_idle_timeout_s=SHORT,
        send_timeout_s=SHORT,
    )
    async with connection(port) as (reader, writer):
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        started = time.monotonic()
        for _ in range(4):  # traffic for 4 * 0.5 s: longer than every timeout but idle's
            await asyncio.sleep(SHORT)
            writer.write(b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True)))
            frame = await asyncio.wait_for(reader.readexactly(10), 5)
            assert frame == b"\x81\x08echo: hi"
        assert time.monotonic() - started > 1.5
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then idle: closed
        assert time.monotonic() - started >= 4 * SHORT + 1.4
    assert proxy.timeouts["websocket_idle"] == 1
    assert proxy.timeouts["upstream_header"] == proxy.timeouts["upstream_idle"] == 0


# --- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("//admin", "/admin"),
        ("/x/../admin", "/admin"),
        ("/%2e%2e/admin/", "/admin/"),
        ("/./admin//users/./x/..?q=/../x", "/admin/users/?q=/../x"),
        ("/ADMIN/../%61dmin/a%2fb", "/admin/a%2Fb"),
        ("http://app.test/x/%2E%2E/admin", "/admin"),
    ],
)
async def test_other_spellings_reach_the_prefix_route(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy, target: str, forwarded: str
) -> None:
    root, admin = await apps("root"), await apps("admin")
    _, port = await make_proxy([route(root.port), route(admin.port, "/admin", "admin")])
    response = await raw(port, get(target))
    assert status_of(response) == 200
    assert response.endswith(f"admin {forwarded} 0\n".encode())
    assert admin.targets() == [forwarded]
    assert root.seen == []


@pytest.mark.parametrize(
    "target",
    [
        "/%2Fadmin",  # an encoded slash in the segment the /admin route depends on
        "/admin%2F..%2Fx",
        "/x/..%2F..%2Fadmin",  # decoding would make dot segments
        "/%5Cadmin",
        "/%zz",  # a bad escape
        "*",  # asterisk-form is for OPTIONS only
        "ftp://app.test/admin",
        "http://evil@app.test/admin",
    ],
)
async def test_unsafe_targets_are_400(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy, target: str
) -> None:
    root, admin = await apps("root"), await apps("admin")
    _, port = await make_proxy([route(root.port), route(admin.port, "/admin", "admin")])
    assert status_of(await raw(port, get(target))) == 400
    assert root.seen == admin.seen == []


async def test_encoded_slash_deeper_than_any_prefix_is_forwarded(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    root, admin = await apps("root"), await apps("admin")
    _, port = await make_proxy([route(root.port), route(admin.port, "/admin", "admin")])
    assert status_of(await raw(port, get("/repos/group%2Fproject"))) == 200
    assert status_of(await raw(port, get("/admin/a%2fb"))) == 200
    assert root.targets() == ["/repos/group%2Fproject"]
    assert admin.targets() == ["/admin/a%2Fb"]


async def test_options_asterisk_is_proxied(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    _, port = await make_proxy([route(app.port)])
    response = await raw(port, b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    assert status_of(response) != 400


async def test_dot_segments_cannot_climb_above_a_proxy_targets_base(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("origin")
    outside = route(
        app.port, "/", "proxy 127.0.0.1", upstream_host="origin.test", upstream_path="/base"
    )
    _, port = await make_proxy([outside])
    for target in ("/../../secret", "/%2e%2e/secret", "/a/../../secret", "//../secret"):
        assert status_of(await raw(port, get(target))) == 200
    assert app.targets() == ["/base/secret"] * 4
    assert {headers["Host"] for _, headers in app.seen} == {"origin.test"}


# --- Host -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["app.test:@evil.test", "app.example.com:@evil.example", "evil.test@app.test", "app.test/x"],
)
async def test_host_that_is_not_a_name_and_port_is_400(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy, host: str
) -> None:
    app = await apps("web")
    _, port = await make_proxy([route(app.port)])
    assert status_of(await raw(port, get("/", host=host))) == 400
    if "/" not in host:  # as an absolute-form authority
        assert status_of(await raw(port, get(f"http://{host}/"))) == 400
    assert app.seen == []


async def test_upstream_gets_the_normalized_host(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    _, port = await make_proxy([route(app.port)])
    assert status_of(await raw(port, get("/", host="APP.Test.:8080"))) == 200
    assert status_of(await raw(port, get("http://App.TEST/abs"))) == 200
    assert [h["Host"] for _, h in app.seen] == ["app.test:8080", "app.test"]
    assert [h["X-Forwarded-Host"] for _, h in app.seen] == ["app.test:8080", "app.test"]


# --- forwarding headers ---------------------------------------------------------------

SPOOFED = (
    "X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\nTrue-Client-IP: 6.6.6.6\r\n"
    "X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-Server: evil\r\n"
    "X_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n"
    "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Kept: yes\r\n"
)
DROPPED = {
    "forwarded",
    "true-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x_forwarded_for",
    "x-real_ip",
}


async def test_client_forwarding_headers_never_reach_the_app(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    _, port = await make_proxy([route(app.port)])
    assert status_of(await raw(port, get("/", extra=SPOOFED), source=OTHER)) == 200
    [(_, headers)] = app.seen
    names = {name.lower() for name in headers}
    assert not names & DROPPED
    assert headers["X-Real-IP"] == OTHER
    assert headers["X-Forwarded-For"] == OTHER
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == HOST
    assert headers["X-Kept"] == "yes"
    assert "6.6.6.6" not in repr(headers)


async def test_trusted_proxy_keeps_its_chain_and_names_the_client(
    apps: Callable[[str], Awaitable[App]], make_proxy: MakeProxy
) -> None:
    app = await apps("web")
    _, port = await make_proxy([route(app.port)], trusted_proxies=(OTHER,))
    assert status_of(await raw(port, get("/", extra=SPOOFED), source=OTHER)) == 200
    [(_, headers)] = app.seen
    names = {name.lower() for name in headers}
    assert not names & DROPPED  # the rest is dropped from trusted proxies too
    assert headers["X-Forwarded-For"] == f"6.6.6.6, {OTHER}"
    assert headers["X-Real-IP"] == "6.6.6.6"  # the client the trusted chain names
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == "evil.test"
