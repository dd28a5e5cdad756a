"""TLS session resumption through the proxy's worker processes (patrd/tls/tickets.py).

Two real worker processes share the HTTPS port (``SO_REUSEPORT``); every
connection here is a new one, so the kernel spreads them over both. A
client that got a session ticket from one worker must resume on either: the
daemon gives both the same ticket key. With a key per worker, a dozen
resumptions in a row would each land on the issuing worker 1 time in 2.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from patrd.proxy.router import RoutingTable
from patrd.proxy.runtime import EventLoop, ProxyRuntime
from patrd.proxy.server import ProxyOptions
from patrd.proxy.workers import ProxyWorkers
from patrd.tls.certstore import CertStore, generate_key
from patrd.tls.localca import LocalCA
from tests.support.daemon import free_port

NAME = "resume.localhost"  # inside the local CA's name constraints
LOOPBACK = "127.0.0.1"
RECONNECTS = 12


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """Two workers with a certificate for NAME; the HTTPS port and the CA to trust."""
    ca = LocalCA(tmp_path / "ca")
    certs = CertStore(tmp_path / "certs")
    key = generate_key()
    certs.install(*certs.write(NAME, key, ca.issue(NAME, key)))
    proxy = ProxyWorkers(
        ProxyOptions(),
        ProxyRuntime(EventLoop.UVLOOP, 2),
        certs=certs,
        log_level="warning",
    )
    proxy.set_table(RoutingTable())
    port = free_port()
    await proxy.start([(LOOPBACK, 0)], [(LOOPBACK, port)])
    try:
        yield port, ca.cert_path
    finally:
        await proxy.stop(timeout=2.0)


def _request(
    client: ssl.SSLContext, port: int, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession | None, bytes]:
    """One request on a new connection: (resumed, the session to offer next, status line)."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname=NAME, session=session) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):  # TLS 1.3 tickets arrive with the answer
                data += chunk
            return bool(tls.session_reused), tls.session, data.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
async def test_a_ticket_from_one_worker_resumes_on_every_worker(
    https: tuple[int, Path], version: ssl.TLSVersion
) -> None:
    port, ca = https
    client = ssl.create_default_context(cafile=str(ca))
    client.minimum_version = client.maximum_version = version
    resumed, session, status = await asyncio.to_thread(_request, client, port, None)
    assert not resumed
    assert status.startswith(b"HTTP/1.1 ")  # the proxy answered (no route: its own page)
    assert session is not None and session.has_ticket
    outcomes = []
    for _ in range(RECONNECTS):
        resumed, latest, _ = await asyncio.to_thread(_request, client, port, session)
        outcomes.append(resumed)
        session = latest or session
    assert outcomes == [True] * RECONNECTS


async def test_without_the_session_the_handshake_is_full(https: tuple[int, Path]) -> None:
    """The check above can fail: a client offering nothing does not resume."""
    port, ca = https
    client = ssl.create_default_context(cafile=str(ca))
    for _ in range(3):
        resumed, _, _ = await asyncio.to_thread(_request, client, port, None)
        assert not resumed
