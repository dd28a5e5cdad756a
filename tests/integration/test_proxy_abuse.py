"""The proxy against abusive clients, over raw sockets on loopback.

Request smuggling (CL+TE, duplicate Content-Length, bad chunk framing),
oversized heads and bodies, slowloris dribbles, spoofed X-Forwarded-*, the
per-client request rate limit and the connection caps. The upstream records
every request it receives, so "never forwarded" is checked, not assumed.
Clients use 127.0.0.1 and 127.0.0.2 (both loopback) as two distinct
addresses. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from patrd.proxy.router import Backend
from patrd.proxy.server import ProxyOptions, ProxyServer
from tests.support.proxy_rig import proxies, route, serve_on_loopback, table
from tests.support.raw_http import LOOPBACK, connection, next_response, raw, status_of

# serial: timeout windows (scripts/test runs these alone, after the parallel part).
pytestmark = pytest.mark.serial

OTHER = "127.0.0.2"  # a second client address on loopback
HOST = b"app.test"


class Recorder:
    """An aiohttp upstream that records (method, path, headers) of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner, self.port = await serve_on_loopback(app)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path, dict(request.headers)))
        return web.Response(text=f"{request.method} {request.path} {len(body)}\n")

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]


MakeProxy = Callable[..., Awaitable[int]]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    r = Recorder()
    await r.start()
    yield r
    assert r.runner is not None
    await r.runner.cleanup()


@pytest.fixture
async def make_proxy(recorder: Recorder) -> AsyncIterator[MakeProxy]:
    backend = Backend(instance="web-0", host=LOOPBACK, port=recorder.port)
    async with proxies() as start:

        async def make(**options: object) -> int:
            proxy, port = await start(
                ProxyOptions(**options),  # type: ignore[arg-type]
                table(route(backend, host=HOST.decode(), deployment="web")),
            )
            make.proxy = proxy  # type: ignore[attr-defined]
            return port

        yield make


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (path.encode(), HOST, extra)


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="cl-te",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 6\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="te-cl",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n"
            b"Content-Length: 44\r\n\r\n" + SMUGGLED,
            id="duplicate-cl-differing",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
            b"Content-Length: 4\r\n\r\nabcd" + SMUGGLED,
            id="duplicate-cl-same",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nabcdXX0\r\n\r\n" + SMUGGLED,
            id="bad-chunk-terminator",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nabcd\r\n0\r\n\r\n" + SMUGGLED,
            id="bad-chunk-size",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext\nabcd\r\n0\r\n\r\n" + SMUGGLED,
            id="chunk-extension-bare-lf",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\nabcd\r\n0\r\n\r\n" + SMUGGLED,
            id="chunk-size-bare-lf",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"ffffffffffffffffff\r\nabcd\r\n0\r\n\r\n" + SMUGGLED,
            id="chunk-size-overflow",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="te-twice",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\nHost: app.test\nContent-Length: 4\n\nabcd" + SMUGGLED,
            id="head-bare-lf",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4, 4\r\n\r\nabcd" + SMUGGLED,
            id="cl-list",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\n\r\n"
            b"0\r\n\r\n" + SMUGGLED,
            id="te-obfuscated",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding : chunked\r\n\r\n"
            b"0\r\n\r\n" + SMUGGLED,
            id="te-space-before-colon",
        ),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: +4\r\n\r\nabcd" + SMUGGLED,
            id="cl-with-sign",
        ),
    ],
)
async def test_smuggling_attempts_are_400_closed_and_never_forwarded(
    recorder: Recorder, make_proxy: MakeProxy, attack: bytes
) -> None:
    port = await make_proxy(max_header_bytes=16384)
    response = await raw(port, attack)
    assert status_of(response) == 400, response[:200]
    assert b"connection: close" in response.lower()
    assert response.count(b"HTTP/1.1 ") == 1  # one answer, then the connection ended
    await asyncio.sleep(0.1)
    assert "/smuggled" not in recorder.paths()
    # The part before the error is never forwarded either when the framing is ambiguous.
    assert recorder.paths() in ([], ["/a"])
    if b"Content-Length" in attack and b"Transfer-Encoding" in attack:
        assert recorder.paths() == []


async def test_oversized_header_431_and_body_413(recorder: Recorder, make_proxy: MakeProxy) -> None:
    port = await make_proxy(max_header_bytes=16 * 1024, max_body_bytes=1024)
    big = get("/h", b"X-Big: " + b"a" * 17 * 1024 + b"\r\n")
    response = await raw(port, big)
    assert status_of(response) == 431 and b"connection: close" in response.lower()
    body = b"POST /b HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048
    response = await raw(port, body)
    assert status_of(response) == 413 and b"connection: close" in response.lower()
    assert recorder.paths() == []
    # Just under both limits: forwarded.
    ok = b"POST /ok HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n"
    assert status_of(await raw(port, ok + b"y" * 1024)) == 200
    assert recorder.paths() == ["/ok"]


async def test_slowloris_dribble_is_closed_within_the_header_timeout(
    recorder: Recorder, make_proxy: MakeProxy
) -> None:
    timeout = 1.0
    port = await make_proxy(header_timeout_s=timeout)
    request = get("/slow", b"X-Pad: " + b"p" * 60 + b"\r\n")

    async def dribble() -> tuple[float, bytes]:
        """One byte every 50 ms: never idle, never done."""
        start = time.monotonic()
        received = b""
        with contextlib.suppress(ConnectionError):
            async with connection(port) as (reader, writer):
                for byte in request[:-4]:  # never the final CRLF CRLF
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        received += await asyncio.wait_for(reader.read(1024), 0.05)
                    if reader.at_eof():
                        break
                else:
                    raise AssertionError("the dribble was never cut")
        return time.monotonic() - start, received

    # 20 slowloris connections at once; a normal client is served meanwhile.
    attackers = [asyncio.create_task(dribble()) for _ in range(20)]
    await asyncio.sleep(0.3)
    async with connection(port) as (reader, writer):
        writer.write(get("/normal"))
        status, _, _ = await next_response(reader)
    assert status == 200
    results = await asyncio.gather(*attackers)
    for took, received in results:
        assert timeout * 0.9 <= took <= timeout + 1.0, took
        assert received == b""  # closed without an answer, never forwarded
    assert recorder.paths() == ["/normal"]


async def test_spoofed_forwarded_headers_are_replaced(
    recorder: Recorder, make_proxy: MakeProxy
) -> None:
    port = await make_proxy()
    spoof = b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
    spoof += b"x-forwarded-for: 7.7.7.7\r\nConnection: close\r\n"
    assert status_of(await raw(port, get("/x", spoof), source=OTHER)) == 200
    [(_, _, headers)] = recorder.seen
    assert headers["X-Forwarded-For"] == OTHER
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == "app.test"
    assert "6.6.6.6" not in str(headers) and "evil" not in str(headers)


async def test_trusted_proxy_forwarded_headers_are_kept_and_appended(
    recorder: Recorder, make_proxy: MakeProxy
) -> None:
    port = await make_proxy(trusted_proxies=(f"{LOOPBACK}/32",))
    hops = b"X-Forwarded-For: 203.0.113.5, 198.51.100.9\r\nX-Forwarded-Proto: https\r\n"
    hops += b"X-Forwarded-Host: www.example.com\r\nConnection: close\r\n"
    assert status_of(await raw(port, get("/t", hops))) == 200
    # An untrusted peer sending the same headers gets them replaced.
    assert status_of(await raw(port, get("/u", hops), source=OTHER)) == 200
    trusted, untrusted = (h for _, _, h in recorder.seen)
    assert trusted["X-Forwarded-For"] == f"203.0.113.5, 198.51.100.9, {LOOPBACK}"
    assert trusted["X-Forwarded-Proto"] == "https"
    assert trusted["X-Forwarded-Host"] == "www.example.com"
    assert untrusted["X-Forwarded-For"] == OTHER
    assert untrusted["X-Forwarded-Proto"] == "http"
    assert untrusted["X-Forwarded-Host"] == "app.test"


async def test_per_client_rate_limit_gives_429_and_recovers(
    recorder: Recorder, make_proxy: MakeProxy
) -> None:
    rate, burst = 5.0, 5
    port = await make_proxy(rate_limit_rps=rate, rate_limit_burst=burst, rate_limit_exempt=())
    async with connection(port) as (reader, writer):
        statuses = []
        retry_after = None
        for _ in range(burst + 3):  # one keep-alive connection: 429s do not close it
            writer.write(get("/r"))
            status, headers, _ = await next_response(reader)
            statuses.append(status)
            if status == 429:
                retry_after = headers.get("retry-after")
        assert statuses == [200] * burst + [429] * 3
        assert retry_after == "1"
        # Another address is not affected.
        assert status_of(await raw(port, get("/o", b"Connection: close\r\n"), source=OTHER)) == 200
        # One token comes back every 1/rate s: the client recovers.
        await asyncio.sleep(1 / rate + 0.05)
        writer.write(get("/r"))
        assert (await next_response(reader))[0] == 200
    proxy: ProxyServer = make_proxy.proxy  # type: ignore[attr-defined]
    assert proxy.limited_requests == 3
    assert recorder.paths().count("/r") == burst + 1


async def test_rate_limit_behind_a_trusted_proxy_is_per_forwarded_client(
    recorder: Recorder, make_proxy: MakeProxy
) -> None:
    port = await make_proxy(
        rate_limit_rps=1.0,
        rate_limit_burst=2,
        rate_limit_exempt=(),
        trusted_proxies=(f"{LOOPBACK}/32",),
    )
    async with connection(port) as (reader, writer):
        results = []
        for client in (b"198.51.100.1",) * 3 + (b"198.51.100.2",) * 2:
            writer.write(get("/f", b"X-Forwarded-For: %b\r\n" % client))
            results.append((await next_response(reader))[0])
        assert results == [200, 200, 429, 200, 200]


async def test_global_connection_cap(recorder: Recorder, make_proxy: MakeProxy) -> None:
    cap, attempts = 20, 60
    port = await make_proxy(max_connections=cap)
    opened = [await asyncio.open_connection(LOOPBACK, port) for _ in range(attempts)]
    try:
        answers = []
        for reader, writer in opened:
            writer.write(get("/c"))
            with contextlib.suppress(ConnectionError):
                answers.append((await next_response(reader))[0])
        served, refused = answers.count(200), answers.count(503)
        print(f"\nconnection cap {cap}: {attempts} connections → {served} served, {refused} 503")
        assert served == cap and refused == attempts - cap
    finally:
        for _, writer in opened:
            writer.close()
    await asyncio.sleep(0.2)
    # Capacity comes back once connections close.
    assert status_of(await raw(port, get("/after", b"Connection: close\r\n"))) == 200
    proxy: ProxyServer = make_proxy.proxy  # type: ignore[attr-defined]
    assert proxy.refused_connections == attempts - cap


async def test_per_client_connection_cap(recorder: Recorder, make_proxy: MakeProxy) -> None:
    port = await make_proxy(max_connections_per_ip=3, rate_limit_exempt=())
    held = [await asyncio.open_connection(LOOPBACK, port) for _ in range(3)]
    try:
        response = await raw(port, get("/4th"))
        assert status_of(response) == 429 and b"retry-after: 1" in response.lower()
        assert status_of(await raw(port, get("/o", b"Connection: close\r\n"), source=OTHER)) == 200
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.2)
    assert status_of(await raw(port, get("/again", b"Connection: close\r\n"))) == 200
    assert "/4th" not in recorder.paths()
