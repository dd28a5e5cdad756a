"""The proxy on real loopback sockets, in front of real upstream servers.

Upstreams are aiohttp web servers (plus a few raw asyncio servers where
aiohttp would not misbehave on purpose) on ephemeral ports of 127.0.0.1.
Clients are aiohttp ``ClientSession`` and raw sockets. Every loop is bounded
in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import NamedTuple

import aiohttp
import pytest

from patrd.proxy.router import Backend, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer
from tests.support.proxy_rig import (
    HOST,
    MakeProxy,
    MakeRaw,
    MakeUpstream,
    MiB,
    RawUpstream,
    Upstream,
    free_port,
    outstanding_becomes,
    pattern,
    proxies,
    route,
    table,
)
from tests.support.raw_http import (
    LOOPBACK,
    connection,
    next_response,
    raw,
    status_of,
)
from tests.support.waits import until

# --- fixtures -----------------------------------------------------------------


class WebProxy(NamedTuple):
    upstream: Upstream
    proxy: ProxyServer
    base: str  # http://127.0.0.1:port
    port: int


@pytest.fixture
async def make_proxy(
    upstreams: list[Upstream | RawUpstream],
) -> AsyncIterator[MakeProxy]:
    async with proxies() as start:

        async def make(
            routes: RoutingTable, options: ProxyOptions | None = None
        ) -> tuple[ProxyServer, int]:
            return await start(options or ProxyOptions(), routes)

        yield make


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


@pytest.fixture
async def web_proxy(make_upstream: MakeUpstream, make_proxy: MakeProxy) -> WebProxy:
    """One aiohttp upstream behind a proxy."""
    upstream = await make_upstream("a")
    proxy, port = await make_proxy(table(route(upstream.backend())))
    return WebProxy(upstream, proxy, f"http://{LOOPBACK}:{port}", port)


# --- plain proxying ---------------------------------------------------------------


async def test_get_is_proxied(web_proxy: WebProxy, session: aiohttp.ClientSession) -> None:
    upstream, proxy, base, _ = web_proxy
    async with session.get(f"{base}/hello", headers={"Host": HOST}) as response:
        assert response.status == 200
        assert await response.text() == "hello from a"
    assert upstream.hits["/hello"] == 1
    assert proxy.active_requests == 0
    assert proxy.outstanding(LOOPBACK, upstream.port) == 0


async def test_keep_alive_reuses_one_upstream_connection(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    upstream, _, base, _ = web_proxy
    for _ in range(30):
        async with session.get(f"{base}/hello", headers={"Host": HOST}) as response:
            assert await response.text() == "hello from a"
    assert upstream.hits["/hello"] == 30
    assert len(upstream.peers) == 1


async def test_client_keep_alive_over_raw_socket(
    web_proxy: WebProxy,
) -> None:
    upstream, _, _, port = web_proxy
    async with connection(port) as (reader, writer):
        for _ in range(5):
            writer.write(b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n")
            status, _, body = await next_response(reader)
            assert (status, body) == (200, b"hello from a")
        # Pipelined: two requests in one write, answered in order.
        writer.write(
            b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n"
            b"GET /nothing HTTP/1.1\r\nHost: app.test\r\n\r\n"
        )
        first = await next_response(reader)
        second = await next_response(reader)
        assert first[0] == 200 and first[2] == b"hello from a"
        assert second[0] == 204
    assert len(upstream.peers) == 1


async def test_http10_client(web_proxy: WebProxy) -> None:
    port = web_proxy.port
    response = await raw(port, b"GET /hello HTTP/1.0\r\nHost: app.test\r\n\r\n")
    assert status_of(response) == 200
    assert b"connection: close" in response.lower()
    assert response.endswith(b"hello from a")
    # HTTP/1.0 with keep-alive, and a chunked upstream body sent until close.
    response = await raw(
        port, b"GET /big HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n"
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert len(body) == 8 * MiB


async def test_post_chunked_body_is_streamed_and_echoed(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    upstream, _, base, _ = web_proxy
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(16):  # 1 MiB in 64 KiB chunks
            chunk = pattern(i, 64 * 1024)
            sent.update(chunk)
            yield chunk

    async with session.post(f"{base}/echo", data=body(), headers={"Host": HOST}) as response:
        assert response.status == 200
        received = await response.read()
    assert len(received) == MiB
    assert hashlib.sha256(received).hexdigest() == sent.hexdigest()
    seen = dict(upstream.headers[-1])
    assert seen.get("Transfer-Encoding") == "chunked"


async def test_post_content_length_body(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    upstream, _, base, _ = web_proxy
    data = b"".join(pattern(i, 1000) for i in range(300))
    async with session.post(f"{base}/echo", data=data, headers={"Host": HOST}) as response:
        assert await response.read() == data
    assert dict(upstream.headers[-1])["Content-Length"] == str(len(data))


@pytest.mark.parametrize("path", ["/big", "/big-cl"])
async def test_large_response_is_streamed(
    web_proxy: WebProxy, session: aiohttp.ClientSession, path: str
) -> None:
    _, _, base, _ = web_proxy
    digest = hashlib.sha256()
    total = 0
    async with session.get(f"{base}{path}", headers={"Host": HOST}) as response:
        assert response.status == 200
        async for chunk in response.content.iter_chunked(256 * 1024):
            digest.update(chunk)
            total += len(chunk)
            await asyncio.sleep(0)  # a slowish reader: exercises back-pressure
    expected = hashlib.sha256(b"".join(pattern(i, 64 * 1024) for i in range(128)))
    assert total == 8 * MiB
    assert digest.hexdigest() == expected.hexdigest()


async def test_head_has_no_body(web_proxy: WebProxy) -> None:
    upstream, _, _, port = web_proxy
    async with connection(port) as (reader, writer):
        writer.write(b"HEAD /big-cl HTTP/1.1\r\nHost: app.test\r\n\r\n")
        status, headers, _ = await next_response(reader, head_only=True)
        assert status == 200
        assert headers["content-length"] == str(8 * MiB)
        # The next answer on the connection starts right after the head.
        writer.write(b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n")
        status, _, body = await next_response(reader)
        assert (status, body) == (200, b"hello from a")
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: app.test\r\n\r\n")
        status, headers, body = await next_response(reader)
        assert status == 204 and body == b""
    assert len(upstream.peers) == 1  # the HEAD answer left the upstream connection reusable


# --- routing answers ----------------------------------------------------------------


async def test_unknown_host_is_404(web_proxy: WebProxy, session: aiohttp.ClientSession) -> None:
    upstream, _, base, _ = web_proxy
    async with session.get(f"{base}/hello", headers={"Host": "other.test"}) as response:
        assert response.status == 404
        assert response.content_type == "text/plain"
        assert "no deployment" in await response.text()
    assert upstream.hits["/hello"] == 0


@pytest.mark.parametrize(
    ("status", "backends", "text"),
    [
        (RouteStatus.STOPPED, True, "deployment web is stopped"),
        (RouteStatus.DEPLOYING, True, "deployment web is deploying"),
        (RouteStatus.ERRORED, False, "deployment web is errored"),
        (RouteStatus.CREATED, False, "deployment web is created"),
        (RouteStatus.RUNNING, False, "no ready instance"),
    ],
)
async def test_unavailable_deployment_is_503(
    make_upstream: MakeUpstream,
    make_proxy: MakeProxy,
    session: aiohttp.ClientSession,
    status: RouteStatus,
    backends: bool,
    text: str,
) -> None:
    upstream = await make_upstream("a")
    routes = table(route(*([upstream.backend()] if backends else []), status=status))
    _, port = await make_proxy(routes)
    async with session.get(f"http://{LOOPBACK}:{port}/hello", headers={"Host": HOST}) as response:
        assert response.status == 503
        assert text in await response.text()
    assert upstream.hits["/hello"] == 0


async def test_closed_backend_port_is_502(
    make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    dead = Backend(instance="web-0", host=LOOPBACK, port=free_port())
    proxy, port = await make_proxy(table(route(dead)))
    for _ in range(2):  # and the client connection stays usable
        async with session.get(f"http://{LOOPBACK}:{port}/", headers={"Host": HOST}) as response:
            assert response.status == 502
    assert proxy.active_requests == 0
    assert proxy.outstanding(LOOPBACK, dead.port) == 0


async def test_path_prefix_routes_to_its_deployment(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    a, b = await make_upstream("a"), await make_upstream("b")
    _, port = await make_proxy(
        table(route(a.backend()), route(b.backend(), prefix="/hello", deployment="api"))
    )
    async with session.get(
        f"http://{LOOPBACK}:{port}/hello", headers={"Host": "APP.test:80"}
    ) as response:
        assert await response.text() == "hello from b"
    async with session.get(f"http://{LOOPBACK}:{port}/", headers={"Host": HOST}) as response:
        assert await response.text() == "hello from a"


# --- headers ---------------------------------------------------------------------------


async def test_forwarded_headers_replace_the_clients(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    upstream, _, base, _ = web_proxy
    headers = {
        "Host": "App.test:8080",
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Host": "evil.test",
        "X-Forwarded-Proto": "https",
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "hop",
        "Keep-Alive": "timeout=5",
        "X-Custom": "kept",
    }
    async with session.get(f"{base}/hello", headers=headers) as response:
        assert response.status == 200
    seen = upstream.headers[-1]
    names = [k.lower() for k, _ in seen]
    values = dict(seen)
    assert names.count("x-forwarded-for") == 1
    assert values["X-Forwarded-For"] == LOOPBACK
    assert values["X-Forwarded-Host"] == "app.test:8080"  # validated and normalized
    assert values["X-Forwarded-Proto"] == "http"
    assert values["X-Real-IP"] == LOOPBACK
    assert values["Host"] == "app.test:8080"
    assert values["X-Custom"] == "kept"
    assert "x-secret" not in names
    assert "keep-alive" not in names


# --- balancing ------------------------------------------------------------------------


async def test_balancing_spreads_over_two_backends(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    a, b = await make_upstream("a"), await make_upstream("b")
    _, port = await make_proxy(table(route(a.backend(), b.backend())))
    seen: Counter[str] = Counter()
    for _ in range(20):
        async with session.get(
            f"http://{LOOPBACK}:{port}/hello", headers={"Host": HOST}
        ) as response:
            seen[await response.text()] += 1
    assert seen == {"hello from a": 10, "hello from b": 10}


async def test_balancing_prefers_the_least_outstanding_backend(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    a, b = await make_upstream("a"), await make_upstream("b")
    proxy, port = await make_proxy(table(route(a.backend(), b.backend())))
    url = f"http://{LOOPBACK}:{port}"
    slow = asyncio.create_task(session.get(f"{url}/sleep?s=1.5", headers={"Host": HOST}))
    await until(
        lambda: proxy.outstanding(LOOPBACK, a.port) + proxy.outstanding(LOOPBACK, b.port),
        5,
        "the slow request at a backend",
        interval=0.01,
    )
    busy = a if proxy.outstanding(LOOPBACK, a.port) else b
    idle = b if busy is a else a
    for _ in range(6):
        async with session.get(f"{url}/hello", headers={"Host": HOST}) as response:
            assert await response.text() == f"hello from {idle.name}"
    async with await slow as response:
        assert await response.text() == f"slept on {busy.name}"
    assert proxy.outstanding(LOOPBACK, busy.port) == 0


async def test_slow_client_back_pressures_the_upstream(
    web_proxy: WebProxy,
) -> None:
    upstream, _, _, port = web_proxy
    async with connection(port) as (reader, writer):
        writer.write(b"GET /firehose HTTP/1.1\r\nHost: app.test\r\n\r\n")
        await asyncio.wait_for(reader.readexactly(1024 * 1024), 5)
        # Stop reading: the proxy must stop reading the upstream, not buffer 256 MiB.
        await asyncio.sleep(1.0)
        stalled_at = upstream.written
        await asyncio.sleep(0.5)
        assert upstream.written == stalled_at
        assert upstream.written < 96 * MiB
        # Reading again resumes the flow.
        await asyncio.wait_for(reader.readexactly(16 * MiB), 10)
        assert upstream.written > stalled_at


async def test_slow_upstream_back_pressures_the_client(
    make_upstream: MakeUpstream, make_proxy: MakeProxy
) -> None:
    upstream = await make_upstream("a")
    _, port = await make_proxy(
        table(route(upstream.backend())), ProxyOptions(max_body_bytes=512 * MiB)
    )
    total = 256 * MiB
    sent = 0
    async with connection(port) as (_, writer):
        writer.write(
            b"POST /hold?s=3 HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % total
        )
        chunk = b"u" * (256 * 1024)
        # While the upstream stalls, the client can only fill the socket buffers.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while sent < total:
                    writer.write(chunk)
                    sent += len(chunk)
                    await writer.drain()
        assert sent < 96 * MiB


async def test_other_upgrades_are_proxied_as_plain_http(
    web_proxy: WebProxy,
) -> None:
    upstream, _, _, port = web_proxy
    async with connection(port) as (reader, writer):
        writer.write(
            b"GET /hello HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
            b"GET /nothing HTTP/1.1\r\nHost: app.test\r\n\r\n"
        )
        status, _, body = await next_response(reader)
        assert (status, body) == (200, b"hello from a")
        assert (await next_response(reader))[0] == 204
        # With a body (llhttp skips the body of an upgrade request; the proxy reads it).
        writer.write(
            b"POST /any HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
            b"Content-Length: 5\r\n\r\nhel"
        )
        await asyncio.sleep(0.05)
        writer.write(b"lo" + b"GET /nothing HTTP/1.1\r\nHost: app.test\r\n\r\n")
        status, _, body = await next_response(reader)
        assert (status, body) == (200, b"hello from a")
        assert (await next_response(reader))[0] == 204
    names = {k.lower() for k, _ in upstream.headers[0]}
    assert "upgrade" not in names
    assert "http2-settings" not in names
    assert dict(upstream.headers[2])["Content-Length"] == "5"


# --- websocket ------------------------------------------------------------------------


async def test_websocket_echo(web_proxy: WebProxy, session: aiohttp.ClientSession) -> None:
    upstream, proxy, base, _ = web_proxy
    async with session.ws_connect(f"{base}/ws", headers={"Host": HOST}) as ws:
        assert proxy.active_requests == 0  # an open websocket is not an in-flight request
        assert proxy.outstanding(LOOPBACK, upstream.port) == 1
        for i in range(5):
            await ws.send_str(f"hi {i}")
            assert await asyncio.wait_for(ws.receive_str(), 5) == f"echo: hi {i}"
        payload = pattern(7, 200_000)
        await ws.send_bytes(payload)
        assert await asyncio.wait_for(ws.receive_bytes(), 5) == payload
    await outstanding_becomes(proxy, upstream.port, 0)


async def test_websocket_to_unknown_host_is_404(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    _, _, base, _ = web_proxy
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(f"{base}/ws", headers={"Host": "nope.test"})
    assert info.value.status == 404


# --- request smuggling and limits ---------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /any HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n",
            id="cl-and-te",
        ),
        pytest.param(
            b"POST /any HTTP/1.1\r\nHost: app.test\r\n"
            b"Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
            id="differing-cl",
        ),
        pytest.param(
            b"POST /any HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nabcd\r\nZZ\r\nGET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n",
            id="malformed-chunk",
        ),
        pytest.param(
            b"POST /any HTTP/1.1\r\nHost: app.test\r\n"
            b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            id="te-not-chunked",
        ),
        pytest.param(
            b"GET /any HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
            id="two-hosts",
        ),
        pytest.param(b"GET /any HTTP/1.1\r\n\r\n", id="no-host"),
        pytest.param(b"GET /any HTTP/1.1\r\nHost: app.test\r\nX: a\r\n b\r\n\r\n", id="obs-fold"),
    ],
)
async def test_ambiguous_requests_are_400_and_never_forwarded(
    web_proxy: WebProxy, request_bytes: bytes
) -> None:
    upstream, proxy, _, port = web_proxy
    response = await raw(port, request_bytes)
    assert status_of(response) == 400
    assert b"connection: close" in response.lower()
    await asyncio.sleep(0.1)
    assert upstream.hits["/hello"] == 0  # the smuggled request never arrived
    assert proxy.active_requests == 0


async def test_oversized_header_is_431(make_upstream: MakeUpstream, make_proxy: MakeProxy) -> None:
    upstream = await make_upstream("a")
    _, port = await make_proxy(
        table(route(upstream.backend())), ProxyOptions(max_header_bytes=4096)
    )
    big = b"X-Big: " + b"a" * 8000 + b"\r\n"
    response = await raw(port, b"GET /hello HTTP/1.1\r\nHost: app.test\r\n" + big + b"\r\n")
    assert status_of(response) == 431
    # Many small headers, and one header split over many writes.
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 50) for i in range(200))
    assert (
        status_of(await raw(port, b"GET /hello HTTP/1.1\r\nHost: app.test\r\n" + many + b"\r\n"))
        == 431
    )
    async with connection(port) as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\nHost: app.test\r\nX-Long: ")
        for _ in range(10):
            writer.write(b"b" * 1000)
            await writer.drain()
        status, _, _ = await next_response(reader)
        assert status == 431
    assert upstream.hits["/hello"] == 0


async def test_oversized_body_is_413(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    upstream = await make_upstream("a")
    _, port = await make_proxy(
        table(route(upstream.backend())), ProxyOptions(max_body_bytes=64 * 1024)
    )
    url = f"http://{LOOPBACK}:{port}/echo"
    # Declared too large: refused before anything is forwarded.
    async with session.post(url, data=b"x" * 100_000, headers={"Host": HOST}) as response:
        assert response.status == 413
    assert upstream.hits["/echo"] == 0

    # Within the limit: fine.
    async with session.post(url, data=b"z" * 60_000, headers={"Host": HOST}) as response:
        assert await response.read() == b"z" * 60_000


async def test_chunked_body_over_limit_before_answer_is_413(
    make_upstream: MakeUpstream, make_proxy: MakeProxy
) -> None:
    upstream = await make_upstream("a")
    _, port = await make_proxy(table(route(upstream.backend())), ProxyOptions(max_body_bytes=1000))
    chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
    response = await raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk,
    )
    assert status_of(response) == 413
    assert upstream.hits["/echo"] == 0


async def test_chunked_body_over_limit_after_answer_started_is_cut(
    make_upstream: MakeUpstream, make_proxy: MakeProxy
) -> None:
    upstream = await make_upstream("a")
    _, port = await make_proxy(
        table(route(upstream.backend())), ProxyOptions(max_body_bytes=50_000)
    )
    received = b""
    with contextlib.suppress(ConnectionResetError):
        async with connection(port) as (reader, writer):
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            writer.write(b"2710\r\n" + b"e" * 10_000 + b"\r\n")
            # The echo answer has started before the body grows too large.
            received = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert status_of(received) == 200
            with contextlib.suppress(ConnectionError):
                for _ in range(10):
                    writer.write(b"2710\r\n" + b"e" * 10_000 + b"\r\n")
                    await writer.drain()
            async with asyncio.timeout(5):
                while chunk := await reader.read(65536):
                    received += chunk
    assert not received.endswith(b"0\r\n\r\n")  # cut, never completed


async def test_header_timeout_closes(make_upstream: MakeUpstream, make_proxy: MakeProxy) -> None:
    upstream = await make_upstream("a")
    _, port = await make_proxy(
        table(route(upstream.backend())), ProxyOptions(header_timeout_s=0.3, idle_timeout_s=0.6)
    )
    async with connection(port) as (reader, writer):
        start = time.monotonic()
        writer.write(b"GET /hello HTTP/1.1\r\nHost: app")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
        assert 0.25 < time.monotonic() - start < 3
    # Idle keep-alive connections are closed after idle_timeout_s.
    async with connection(port) as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert (await next_response(reader))[0] == 200
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.5 < time.monotonic() - start < 3


# --- upstream misbehaviour ------------------------------------------------------------


async def test_dead_pooled_connection_is_retried_for_get(
    make_raw: MakeRaw, make_proxy: MakeProxy
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    # Each connection answers its first request, then dies on the second.
    upstream = await make_raw(lambda n: ok if n == 0 else None)
    _, port = await make_proxy(table(route(upstream.backend())))
    async with connection(port) as (reader, writer):
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            assert await next_response(reader) == (
                200,
                {"content-length": "2"},
                b"ok",
            )
        # Not retried: a POST with a body.
        writer.write(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc")
        status, _, _ = await next_response(reader)
        assert status == 502
    # One connection for the first GET, one retry for each later GET, none for the POST.
    assert upstream.connections == 3


async def test_idle_pool_keeps_bursts_and_trims_what_stays_unused(
    make_raw: MakeRaw, make_proxy: MakeProxy
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    upstream = await make_raw(lambda n: ok, delay=0.2)
    _, port = await make_proxy(
        table(route(upstream.backend())), ProxyOptions(upstream_idle_pool_size=2)
    )

    async def get() -> int:
        response = await raw(port, b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        return status_of(response)

    for _ in range(2):  # two bursts of 8: the second reuses the first's connections
        assert await asyncio.gather(*(get() for _ in range(8))) == [200] * 8
    assert upstream.connections == 8
    # The surplus is closed once it stays unused.
    await until(lambda: upstream.open <= 2, 5, "idle pool trimmed to 2", interval=0.05)
    await asyncio.sleep(1.5)
    assert upstream.open == 2


async def test_read_until_close_response(make_raw: MakeRaw, make_proxy: MakeProxy) -> None:
    upstream = await make_raw(
        lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"q" * 100_000
    )
    _, port = await make_proxy(table(route(upstream.backend())))
    response = await raw(port, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    assert b"connection: close" in head.lower()
    assert body == b"q" * 100_000


async def test_transfer_coding_without_chunked_is_read_until_close(
    make_raw: MakeRaw, make_proxy: MakeProxy
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n" + b"g" * 5000
    )
    upstream = await make_raw(lambda n: answer)
    _, port = await make_proxy(table(route(upstream.backend())))
    response = await raw(port, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding: gzip\r\n" in head.lower() + b"\r\n"
    assert b"connection: close" in head.lower()
    assert body == b"g" * 5000


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="garbage"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n",
            id="huge-head",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            id="cl-and-te",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n",
            id="unasked-101",
        ),
    ],
)
async def test_bad_upstream_response_is_502(
    make_raw: MakeRaw, make_proxy: MakeProxy, answer: bytes
) -> None:
    upstream = await make_raw(lambda n: answer)
    _, port = await make_proxy(table(route(upstream.backend())))
    response = await raw(port, b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 502


async def test_upstream_reset_mid_body_closes_client(
    make_raw: MakeRaw, make_proxy: MakeProxy
) -> None:
    upstream = await make_raw(
        lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\npartial"
    )
    _, port = await make_proxy(table(route(upstream.backend())))
    response = await raw(port, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert status_of(response) == 200
    assert response.endswith(b"partial")  # cut short, and the connection closed


# --- table swaps and drain ------------------------------------------------------------------


async def test_table_swap_while_requests_run(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    a, b = await make_upstream("a"), await make_upstream("b")
    table_a, table_b = table(route(a.backend())), table(route(b.backend()))
    proxy, port = await make_proxy(table_a)
    url = f"http://{LOOPBACK}:{port}/hello"
    statuses: Counter[int] = Counter()

    async def client() -> None:
        for _ in range(40):
            async with session.get(url, headers={"Host": HOST}) as response:
                await response.read()
                statuses[response.status] += 1

    async def swapper() -> None:
        for i in range(40):
            proxy.set_table(table_b if i % 2 == 0 else table_a)
            await asyncio.sleep(0.005)

    async with asyncio.timeout(30):
        await asyncio.gather(*(client() for _ in range(8)), swapper())
    assert statuses == {200: 320}
    assert a.hits["/hello"] > 0 and b.hits["/hello"] > 0
    proxy.set_table(table_b)
    assert proxy.outstanding(LOOPBACK, a.port) == 0
    before = a.hits["/hello"]
    for _ in range(5):
        async with session.get(url, headers={"Host": HOST}) as response:
            assert await response.text() == "hello from b"
    assert a.hits["/hello"] == before


async def test_stop_lets_an_in_flight_stream_finish(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    _, proxy, base, _ = web_proxy
    async with session.get(f"{base}/slow?ticks=6", headers={"Host": HOST}) as response:
        assert response.status == 200
        first = await response.content.readline()
        assert first == b"tick 0\n"
        start = time.monotonic()
        stopping = asyncio.create_task(proxy.stop(timeout=10))
        await asyncio.sleep(0.1)
        assert proxy.active_requests == 1
        # New connections are refused while draining.
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as other:
                await other.get(f"{base}/hello", headers={"Host": HOST})
        rest = await response.read()
    assert rest == b"".join(b"tick %d\n" % i for i in range(1, 6))
    await asyncio.wait_for(stopping, 10)
    assert 2.0 < time.monotonic() - start < 8
    assert proxy.active_requests == 0


async def test_stop_aborts_what_outlives_the_timeout(
    web_proxy: WebProxy, session: aiohttp.ClientSession
) -> None:
    _, proxy, base, _ = web_proxy
    async with session.get(f"{base}/slow?ticks=20", headers={"Host": HOST}) as response:
        await response.content.readline()
        start = time.monotonic()
        await proxy.stop(timeout=0.5)
        assert time.monotonic() - start < 4
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert proxy.active_requests == 0


async def test_answers_during_drain_say_connection_close(
    web_proxy: WebProxy,
) -> None:
    _, proxy, _, port = web_proxy
    async with connection(port) as (reader, writer):
        writer.write(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        await until(lambda: proxy.active_requests, 5, "the request in flight", interval=0.01)
        stopping = asyncio.create_task(proxy.stop(timeout=5))
        status, headers, body = await next_response(reader)
        assert (status, body) == (200, b"slept on a")
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(stopping, 5)


async def test_client_gone_mid_response_releases_everything(
    web_proxy: WebProxy,
) -> None:
    upstream, proxy, _, port = web_proxy
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /slow?ticks=20 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"tick 0\n"), 5)
    assert proxy.outstanding(LOOPBACK, upstream.port) == 1
    writer.close()
    await writer.wait_closed()
    await until(
        lambda: not (proxy.active_requests or proxy.outstanding(LOOPBACK, upstream.port)),
        5,
        "request and upstream connection released",
        interval=0.01,
    )


async def test_client_half_close_after_request_still_gets_the_answer(
    web_proxy: WebProxy,
) -> None:
    port = web_proxy.port
    async with connection(port) as (reader, writer):
        writer.write(b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        writer.write_eof()
        status, _, body = await next_response(reader)
        assert (status, body) == (200, b"slept on a")
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_drain_closes_idle_keep_alive_connections(
    web_proxy: WebProxy,
) -> None:
    _, proxy, _, port = web_proxy
    async with connection(port) as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert (await next_response(reader))[0] == 200
        await asyncio.wait_for(proxy.stop(timeout=5), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_body_limit_per_url(
    make_upstream: MakeUpstream, make_proxy: MakeProxy, session: aiohttp.ClientSession
) -> None:
    """A managed URL's own limit wins over the proxy's, smaller or larger."""
    upstream = await make_upstream("a")
    small = replace(route(upstream.backend(), host="small.test"), max_body_bytes=2048)
    large = replace(route(upstream.backend(), host="large.test"), max_body_bytes=100_000)
    plain = route(upstream.backend(), host="plain.test")
    _, port = await make_proxy(table(small, large, plain), ProxyOptions(max_body_bytes=10_000))
    url = f"http://{LOOPBACK}:{port}/echo"

    async def post(host: str, size: int) -> int:
        async with session.post(url, data=b"b" * size, headers={"Host": host}) as response:
            body = await response.read()
            if response.status == 200:
                assert body == b"b" * size
            return response.status

    assert await post("small.test", 3000) == 413
    assert await post("small.test", 2000) == 200
    assert await post("plain.test", 3000) == 200
    assert await post("plain.test", 20_000) == 413
    assert await post("large.test", 50_000) == 200, "larger than the proxy's own limit"
    assert await post("large.test", 120_000) == 413
    # chunked: counted while streaming against the URL's limit
    chunk = b"800\r\n" + b"c" * 2048 + b"\r\n"
    response = await raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk * 2,
    )
    assert status_of(response) == 413
