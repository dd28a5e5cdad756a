"""TLS end to end: a real patrd daemon, Debian's Pebble as the ACME CA, all on loopback.

Pebble validates HTTP-01 on patrd's plain-HTTP proxy port and resolves every
name to 127.0.0.1 through pebble-challtestsrv, which is also patrd's
resolver for its "does the name resolve here" check. patrd trusts Pebble's
directory through ``acme.ca_bundle``; the clients here trust patrd's
certificates through Pebble's root. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from tests.support.daemon import Api, Daemon
from tests.support.pebble import Pebble
from tests.support.waits import until

pytestmark = pytest.mark.timeout(180)


@dataclass
class Env:
    daemon: Daemon
    pebble: Pebble
    api: Api


@pytest.fixture
async def make_env(tmp_path: Path, names: list[str]) -> AsyncIterator[Callable[..., Any]]:
    """``await make_env(acme={...}, tls={...}, pebble_up=True, validity_s=None)``."""
    made: list[tuple[Daemon, Pebble, Api]] = []

    async def make(
        *,
        acme: dict[str, Any] | None = None,
        tls: dict[str, Any] | None = None,
        pebble_up: bool = True,
        validity_s: int | None = None,
    ) -> Env:
        daemon = Daemon(tmp_path / "patrd")
        daemon.workdir.mkdir()
        pebble = Pebble(tmp_path / "pebble", http_port=daemon.proxy_port, validity_s=validity_s)
        config = pebble.patrd_config()
        config["acme"].update(acme or {})
        config["tls"] = {"check_interval_s": 30, **(tls or {})}
        daemon.config = config
        api = Api(daemon)
        made.append((daemon, pebble, api))
        if pebble_up:
            pebble.start()
        else:
            pebble.start()  # the DNS server must answer; the CA is started later
            pebble.stop_ca()
        daemon.start()
        await api.__aenter__()
        return Env(daemon, pebble, api)

    yield make
    for daemon, pebble, api in made:
        with contextlib.suppress(Exception):
            await api.__aexit__()
        daemon.stop()
        pebble.stop()


def domain(prefix: str = "app") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}.patrd-test.example"


async def certificate(api: Api, name: str) -> dict[str, Any]:
    data = await api.ok("GET", "/v1/certificates")
    for cert in data["certificates"]:
        if cert["domain"] == name:
            return dict(cert)
    return {}


async def wait_cert(
    env: Env, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    async def met() -> dict[str, Any] | None:
        cert = await certificate(env.api, name)
        return cert if cert and check(cert) else None

    found: dict[str, Any] = await until(
        met, timeout, f"{name}: condition", env.daemon, detail=lambda: env.pebble.log_tail(10)
    )
    return found


def issued(cert: dict[str, Any]) -> bool:
    return bool(cert["status"] == "issued" and cert["issuer"] == "acme")


async def https_get(port: int, host: str, path: str, ctx: ssl.SSLContext) -> tuple[int, bytes, int]:
    """One request on a fresh TLS connection: (status, body, the served cert's serial)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host), 10
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        serial = x509.load_der_x509_certificate(der).serial_number
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, serial


async def http_get(port: int, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": host}, allow_redirects=False
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


@contextlib.asynccontextmanager
async def origin() -> AsyncIterator[int]:
    """A plain HTTP origin on loopback for {proxy: url} targets: answers its Host and path."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"origin host={request.host} path={request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield int(port)
    finally:
        await runner.cleanup()


# --- the tests ------------------------------------------------------------------


async def test_managed_url_over_https_end_to_end(
    make_env: Callable[..., Any], test_images: dict[str, str], new_name: Callable[[str], str]
) -> None:
    """Pebble issues; HTTPS (and a websocket over TLS) reaches the container; plain HTTP
    gets a 308 except on the ACME challenge path; a restart re-orders nothing."""
    env: Env = await make_env()
    api, daemon = env.api, env.daemon
    name = new_name("tls")
    await api.ok(
        "POST",
        "/v1/deployments",
        {
            "name": name,
            "image": "patrd-test/web",
            "tag": "v1",
            "ports": {"80": "http", "8081": "http"},
        },
    )
    host = domain()
    url = await api.ok(
        "POST", "/v1/urls", {"domain": host, "target": {"deployment": name, "port": 80}}
    )
    await api.ok(
        "POST",
        "/v1/urls",
        {"domain": host, "path": "/ws", "target": {"deployment": name, "port": 8081}},
    )
    started = time.monotonic()
    cert = await wait_cert(env, host, issued)
    issue_s = time.monotonic() - started
    await api.wait_status(name, "running")
    assert cert["orders_total"] == 1 and cert["failures"] == 0
    events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
    assert any(
        e["kind"] == "tls" and e["message"].startswith(f"certificate for {host} issued (ACME)")
        for e in events
    ), events
    shown = await api.ok("GET", f"/v1/urls/{url['id']}")
    assert shown["tls"]["status"] == "issued" and shown["tls"]["expires_at"]
    assert shown["url"] == f"https://{host}:{daemon.https_port}/"

    ctx = env.pebble.client_context()
    status, body, serial = await https_get(daemon.https_port, host, "/cgi-bin/version", ctx)
    assert (status, body) == (200, b"v1\n")
    assert f"{serial:x}" == cert["serial"]
    status, body, _ = await https_get(daemon.https_port, host, "/cgi-bin/env", ctx)
    assert status == 200 and b"HTTP_X_FORWARDED_PROTO=https" in body

    # TLS 1.2 works as well as 1.3 (older versions are off: test_certstore.py).
    tls12 = env.pebble.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert (await https_get(daemon.https_port, host, "/cgi-bin/version", tls12))[0] == 200

    # A websocket over TLS, through the same certificate.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"https://127.0.0.1:{daemon.https_port}/ws",
            ssl=ctx,
            server_hostname=host,
            headers={"Host": host},
        ) as ws,
    ):
        await ws.send_str("over tls")
        assert (await asyncio.wait_for(ws.receive(), 10)).data == "over tls"

    # Plain HTTP: 308 to https with the query kept; the challenge path is not redirected.
    status, headers, _ = await http_get(daemon.proxy_port, host, "/a/b?x=1&y=2")
    assert status == 308
    assert headers["Location"] == f"https://{host}:{daemon.https_port}/a/b?x=1&y=2"
    status, _, body = await http_get(daemon.proxy_port, host, "/.well-known/acme-challenge/nope")
    assert status == 404 and b"ACME" in body

    # The deployment cannot go while a URL points at it.
    code, error = await api.call("DELETE", f"/v1/deployments/{name}?confirm={name}")
    assert code == 409 and host in error["message"]

    # A restart loads the certificate from disk and orders nothing.
    daemon.stop()
    daemon.start()
    again = await wait_cert(env, host, issued)
    assert again["serial"] == cert["serial"] and again["orders_total"] == 1
    assert again["attempts"] == cert["attempts"]

    async def answered() -> bool:
        status, _, serial = await https_get(daemon.https_port, host, "/cgi-bin/version", ctx)
        assert f"{serial:x}" == cert["serial"]  # served from disk at once
        return status == 200

    # The adopted instance may be re-checked first.
    await until(answered, 20, "a 200 over the certificate from disk", daemon)
    print(f"\nissuance through Pebble: {issue_s:.2f} s")


async def test_ten_issuances_with_pebble_default_noise(make_env: Callable[..., Any]) -> None:
    """Pebble keeps its 5% nonce rejections and authorization reuse: all 10 succeed."""
    env: Env = await make_env()
    hosts = [domain(f"n{i}") for i in range(10)]
    started = time.monotonic()
    for host in hosts:
        await env.api.ok(
            "POST", "/v1/urls", {"domain": host, "target": {"redirect": "https://example.org/"}}
        )
    certs = [await wait_cert(env, host, issued, timeout=90) for host in hosts]
    elapsed = time.monotonic() - started
    assert all(c["failures"] == 0 and c["orders_total"] == 1 for c in certs), certs
    ctx = env.pebble.client_context()
    for host, cert in zip(hosts, certs, strict=True):
        status, _, serial = await https_get(env.daemon.https_port, host, "/x?y=1", ctx)
        assert status == 308 and f"{serial:x}" == cert["serial"]
    print(f"\n10 issuances (3 at a time): {elapsed:.1f} s")


async def test_renewal_swaps_certificate_without_restart_or_failed_requests(
    make_env: Callable[..., Any],
) -> None:
    """renew_before = 1: a fresh certificate is already due. patrd renews it (within the
    hourly cap) and new TLS connections see a new serial, with zero failed requests."""
    env: Env = await make_env(tls={"renew_before": 1.0}, acme={"max_orders_per_hour": 3})
    host = domain("renew")
    async with origin() as port:
        await env.api.ok(
            "POST",
            "/v1/urls",
            {"domain": host, "target": {"proxy": f"http://127.0.0.1:{port}/base"}},
        )
        first = await wait_cert(env, host, issued)
        ctx = env.pebble.client_context()
        serials: list[int] = []
        failures: list[str] = []

        async def three_serials() -> bool:
            """One request (a new connection); true once three serials were served."""
            try:
                status, body, serial = await https_get(env.daemon.https_port, host, "/p?q=1", ctx)
                if (
                    status != 200
                    or body != f"origin host=127.0.0.1:{port} path=/base/p?q=1".encode()
                ):
                    failures.append(f"{status} {body!r}")
                serials.append(serial)
            except (TimeoutError, OSError, ssl.SSLError) as exc:
                failures.append(repr(exc))
            return len(set(serials)) >= 3

        # Light load meanwhile: ~20 requests/s, each on a new connection.
        await until(three_serials, 45, "three serials served", env.daemon, interval=0.05)
    assert not failures, failures[:5]
    assert len(set(serials)) >= 3, f"serials seen: {len(set(serials))}"
    final = await certificate(env.api, host)
    assert final["renewals"] >= 2
    assert final["orders_total"] <= 3  # the hourly cap holds the renewal loop
    assert int(first["serial"], 16) in serials or serials[0] != int(final["serial"], 16)
    print(f"\n{len(serials)} requests, {len(set(serials))} certificates, 0 failed")


async def test_ca_down_backs_off_then_issues(make_env: Callable[..., Any]) -> None:
    """Pebble stopped: attempts are few and spaced ever wider; Pebble back: issued."""
    env: Env = await make_env(pebble_up=False, acme={"backoff_initial_s": 1, "backoff_max_s": 4})
    host = domain("down")
    await env.api.ok(
        "POST", "/v1/urls", {"domain": host, "target": {"redirect": "https://a.example/"}}
    )
    window_s = 9.0
    await asyncio.sleep(window_s)
    cert = await certificate(env.api, host)
    assert cert["status"] == "failed" and "cannot reach the CA" in cert["error"], cert
    assert cert["orders_total"] == 0
    # 1 + 2 + 4 + 4 ... with jitter in [0.75, 1): at most 5 attempts fit in 9 s.
    assert 3 <= cert["attempts"] <= 5, cert
    waits = [
        float(m)
        for m in re.findall(
            r"event=tls.issue_failed .*?retry_in_s=([0-9.]+)", env.daemon.log_tail(400)
        )
    ]
    # Doubling (1, 2, 4 s, times a jitter in [0.75, 1)) until the 4 s cap, never above it.
    assert len(waits) >= 3 and waits[0] < waits[1] < waits[2], waits
    assert all(0.75 <= w <= 4.0 for w in waits), waits
    env.pebble.start()
    cert = await wait_cert(env, host, issued, timeout=20)
    assert cert["orders_total"] == 1 and cert["failures"] == 0


async def test_name_not_resolving_here_is_not_ordered(make_env: Callable[..., Any]) -> None:
    env: Env = await make_env(acme={"backoff_initial_s": 60})
    host = domain("elsewhere")
    env.pebble.set_address(host, "192.0.2.10")  # TEST-NET-1: resolved, never contacted
    await env.api.ok(
        "POST", "/v1/urls", {"domain": host, "target": {"redirect": "https://a.example/"}}
    )
    cert = await wait_cert(env, host, lambda c: c["failures"] >= 1)
    assert cert["status"] == "failed" and cert["orders_total"] == 0
    assert "192.0.2.10, not to this host" in cert["error"]
    url = (await env.api.ok("GET", "/v1/urls"))["urls"][0]
    assert url["tls"]["status"] == "failed" and "not to this host" in url["tls"]["error"]
    # Without a certificate, plain HTTP is not sent to HTTPS (it would not connect):
    # the URL's own target answers.
    status, headers, _ = await http_get(env.daemon.proxy_port, host, "/x?y=1")
    assert status == 308 and headers["Location"] == "https://a.example/x?y=1"
