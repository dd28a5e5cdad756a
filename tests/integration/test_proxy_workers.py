"""The proxy as worker processes (patrd/proxy/workers.py): real processes, real sockets.

Each test starts :class:`ProxyWorkers` with two workers on loopback ports in
front of aiohttp upstreams running in the test's loop. Connections are
fresh per request where it matters (``Connection: close``), so the kernel
spreads them over both workers' sockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from patrd.proxy.router import RoutingTable
from patrd.proxy.runtime import EventLoop, ProxyRuntime
from patrd.proxy.server import ProxyOptions
from patrd.proxy.workers import ProxyWorkers
from patrd.tls.acme_client import ChallengeTokens
from patrd.tls.certstore import CertStore, generate_key
from patrd.tls.localca import LocalCA
from tests.support.daemon import Api, Daemon
from tests.support.load import rollout_under_load
from tests.support.proxy_rig import (
    HOST,
    MakeUpstream,
    RawUpstream,
    Upstream,
    free_port,
    outstanding_becomes,
    route,
    table,
)
from tests.support.raw_http import LOOPBACK, connection
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

MakeWorkers = Callable[..., Awaitable[tuple[ProxyWorkers, int]]]


@pytest.fixture
async def make_workers(upstreams: list[Upstream | RawUpstream]) -> AsyncIterator[MakeWorkers]:
    started: list[ProxyWorkers] = []

    async def make(
        routes: RoutingTable,
        options: ProxyOptions | None = None,
        *,
        workers: int = 2,
        certs: CertStore | None = None,
        challenges: ChallengeTokens | None = None,
        tls_port: int | None = None,
        hung_after_s: float = 30.0,
    ) -> tuple[ProxyWorkers, int]:
        proxy = ProxyWorkers(
            options or ProxyOptions(),
            ProxyRuntime(EventLoop.UVLOOP, workers),
            certs=certs,
            challenges=challenges,
            log_level="warning",
            hung_after_s=hung_after_s,
        )
        proxy.set_table(routes)
        tls = [(LOOPBACK, tls_port)] if tls_port is not None else []
        [(_, port)] = await proxy.start([(LOOPBACK, 0)], tls)
        started.append(proxy)
        return proxy, port

    yield make
    for proxy in started:
        await proxy.stop(timeout=2.0)


async def get(port: int, path: str = "/hello", host: str = HOST) -> tuple[int, str]:
    """One request on a connection of its own."""
    async with connection(port) as (reader, writer):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10):
            data = await reader.read()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode("latin-1")


async def test_requests_spread_over_both_workers_and_are_counted(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())))
    assert len(proxy.pids) == 2
    answers = await asyncio.gather(*(get(port) for _ in range(60)))
    assert answers == [(200, "hello from a")] * 60
    await proxy.refresh_stats()
    assert proxy.deployment_stats["web"].count == 60
    assert proxy.deployment_stats["web"].classes[2] == 60
    per_worker = proxy.worker_requests()
    assert sum(per_worker) == 60 and all(n > 0 for n in per_worker), per_worker
    assert proxy.active_requests == 0


async def test_a_new_table_reaches_every_worker(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    a, b = await make_upstream("a"), await make_upstream("b")
    proxy, port = await make_workers(table(route(a.backend())))
    assert {body for _, body in await asyncio.gather(*(get(port) for _ in range(20)))} == {
        "hello from a"
    }
    proxy.set_table(table(route(b.backend()), route(a.backend(), host="other.test")))
    assert not proxy.synced  # sent, not yet reported back
    await until(lambda: proxy.synced, 5, "every worker on the new table", interval=0.02)
    answers = await asyncio.gather(*(get(port) for _ in range(40)))
    assert answers == [(200, "hello from b")] * 40
    assert (await get(port, host="other.test"))[1] == "hello from a"


async def test_outstanding_sums_workers_and_waits_for_the_new_table(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    """The controller's instance drain: nonzero until the in-flight request is answered."""
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())))
    assert proxy.outstanding(LOOPBACK, upstream.port) == 0
    slow = asyncio.create_task(get(port, "/sleep?s=1.5"))
    await outstanding_becomes(proxy, upstream.port, 1)
    proxy.set_table(table())  # the instance leaves the pool: drain it
    assert proxy.outstanding(LOOPBACK, upstream.port) == 1
    await until(lambda: proxy.synced, 5, "every worker on the new table", interval=0.02)
    assert proxy.outstanding(LOOPBACK, upstream.port) == 1  # still in flight
    assert await slow == (200, "slept on a")
    await outstanding_becomes(proxy, upstream.port, 0)
    assert await get(port) == (404, "no deployment serves this host\n")


async def test_outstanding_is_conservative_while_a_worker_lags(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, _ = await make_workers(table(route(upstream.backend())))
    await until(lambda: proxy.synced, 5, "every worker on the new table", interval=0.02)
    os.kill(proxy.pids[0], signal.SIGSTOP)  # a worker that cannot read its messages
    try:
        proxy.set_table(table())
        await asyncio.sleep(0.5)
        assert not proxy.synced
        assert proxy.outstanding(LOOPBACK, upstream.port) == 1
    finally:
        os.kill(proxy.pids[0], signal.SIGCONT)
    await until(lambda: proxy.synced, 5, "every worker on the new table", interval=0.02)
    assert proxy.outstanding(LOOPBACK, upstream.port) == 0


async def test_stop_drains_in_flight_requests_in_every_worker(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())))
    pids = proxy.pids
    slow = [asyncio.create_task(get(port, "/sleep?s=1")) for _ in range(8)]
    await outstanding_becomes(proxy, upstream.port, 8)
    started = time.monotonic()
    await proxy.stop(timeout=10)
    assert time.monotonic() - started < 5
    assert await asyncio.gather(*slow) == [(200, "slept on a")] * 8
    with pytest.raises(OSError):
        await get(port)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    await proxy.refresh_stats()
    assert proxy.deployment_stats["web"].count == 8  # the workers' last reports


async def test_stop_aborts_what_outlives_the_drain_timeout(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())))
    slow = asyncio.create_task(get(port, "/sleep?s=30"))
    await outstanding_becomes(proxy, upstream.port, 1)
    started = time.monotonic()
    await proxy.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises((OSError, IndexError, ValueError)):
        await slow  # cut: no (complete) answer


async def test_websocket_through_a_worker(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{LOOPBACK}:{port}/ws", headers={"Host": HOST}) as ws,
    ):
        await outstanding_becomes(proxy, upstream.port, 1)
        for i in range(5):
            await ws.send_str(f"ping {i}")
            assert await ws.receive_str(timeout=5) == f"echo: ping {i}"
        await ws.send_bytes(b"\x00" * 100_000)
        assert await ws.receive_bytes(timeout=5) == b"\x00" * 100_000
    await outstanding_becomes(proxy, upstream.port, 0)


async def test_a_published_challenge_is_in_every_worker_when_publish_returns(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    tokens = ChallengeTokens()
    _, port = await make_workers(table(route(upstream.backend())), challenges=tokens)
    path = "/.well-known/acme-challenge/tok123"
    assert (await get(port, path))[0] == 404
    # Published from a thread, as the ACME client does; no waiting after it.
    await asyncio.to_thread(tokens.publish, "tok123", "tok123.keyauth")
    answers = await asyncio.gather(*(get(port, path) for _ in range(30)))
    assert answers == [(200, "tok123.keyauth")] * 30
    await asyncio.to_thread(tokens.withdraw, "tok123")
    answers = await asyncio.gather(*(get(port, path) for _ in range(30)))
    assert {status for status, _ in answers} == {404}


async def test_a_new_certificate_reaches_every_worker(
    tmp_path: Path, make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    ca = LocalCA(tmp_path / "ca", ("test",))
    certs = CertStore(tmp_path / "certs")
    key = generate_key()
    certs.install(*certs.write("first.test", key, ca.issue("first.test", key)))
    tls_port = free_port()
    proxy, _ = await make_workers(
        table(route(upstream.backend(), host=HOST)), certs=certs, tls_port=tls_port
    )
    client = ssl.create_default_context(cafile=str(ca.cert_path))

    async def handshake(name: str) -> bool:
        try:
            _, writer = await asyncio.open_connection(
                LOOPBACK, tls_port, ssl=client, server_hostname=name
            )
        except (ssl.SSLError, ConnectionError):  # unrecognized_name (or a reset under uvloop)
            return False
        writer.close()
        return True

    assert all(await asyncio.gather(*(handshake("first.test") for _ in range(10))))
    assert not any(await asyncio.gather(*(handshake(HOST) for _ in range(10))))
    key = generate_key()
    certs.install(*certs.write(HOST, key, ca.issue(HOST, key)))

    async def everywhere() -> bool:
        return all(await asyncio.gather(*(handshake(HOST) for _ in range(20))))

    await until(everywhere, 5, "the certificate in every worker", interval=0.05)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://{LOOPBACK}:{tls_port}/hello",
            ssl=client,
            server_hostname=HOST,
            headers={"Host": HOST},
        ) as response,
    ):
        assert response.status == 200
        assert await response.text() == "hello from a"
    assert ("X-Forwarded-Proto", "https") in upstream.headers[-1]
    assert proxy.synced


async def test_per_client_connection_cap_is_exact_across_workers(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    """Steered by client address: one worker sees all of a client's connections."""
    upstream = await make_upstream("a")
    options = ProxyOptions(rate_limit_exempt=(), rate_limit_rps=0, max_connections_per_ip=3)
    proxy, port = await make_workers(table(route(upstream.backend())), options)
    assert proxy.steered
    held = [await asyncio.open_connection(LOOPBACK, port) for _ in range(3)]
    try:
        await asyncio.sleep(0.2)
        # Without steering each worker would admit 3: six fresh connections,
        # some on the other worker, would get through.
        answers = await asyncio.gather(*(get(port) for _ in range(6)))
        assert {status for status, _ in answers} == {429}, answers
    finally:
        for _, writer in held:
            writer.close()
    await until(lambda: proxy.refused_connections >= 6, 5, "6 refused", interval=0.02)


async def test_per_client_rate_limit_is_exact_across_workers(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    options = ProxyOptions(rate_limit_exempt=(), rate_limit_rps=0.01, rate_limit_burst=10)
    proxy, port = await make_workers(table(route(upstream.backend())), options)
    answers = [await get(port) for _ in range(20)]  # one connection each
    assert [status for status, _ in answers] == [200] * 10 + [429] * 10
    await proxy.refresh_stats()
    assert proxy.limited_requests == 10


async def test_a_dead_worker_is_replaced(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())))
    await asyncio.gather(*(get(port) for _ in range(20)))
    await proxy.refresh_stats()
    counted = proxy.deployment_stats["web"].count
    assert counted == 20
    victim = proxy.pids[0]
    os.kill(victim, signal.SIGKILL)
    await until(
        lambda: len(proxy.pids) == 2 and victim not in proxy.pids,
        10,
        "the victim replaced",
        interval=0.02,
    )
    answers = await asyncio.gather(*(get(port) for _ in range(20)))
    assert answers == [(200, "hello from a")] * 20
    await proxy.refresh_stats()
    assert proxy.deployment_stats["web"].count == 40  # the dead worker's count was kept


async def test_a_stuck_worker_is_killed_and_replaced(
    make_upstream: MakeUpstream, make_workers: MakeWorkers
) -> None:
    upstream = await make_upstream("a")
    proxy, port = await make_workers(table(route(upstream.backend())), hung_after_s=1.5)
    victim = proxy.pids[1]
    os.kill(victim, signal.SIGSTOP)  # alive, silent: a loop stuck in a callback
    await until(
        lambda: len(proxy.pids) == 2 and victim not in proxy.pids,
        10,
        "the victim replaced",
        interval=0.02,
    )
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    answers = await asyncio.gather(*(get(port) for _ in range(20)))
    assert answers == [(200, "hello from a")] * 20
    assert len(proxy.pids) == 2  # the healthy one was left alone, and is still there


async def test_address_in_use_fails_start(make_workers: MakeWorkers) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        proxy = ProxyWorkers(ProxyOptions(), ProxyRuntime(EventLoop.UVLOOP, 2))
        with pytest.raises(OSError, match="in use"):
            await proxy.start([(LOOPBACK, taken.getsockname()[1])])


# --- the daemon with two workers: a rollout under load --------------------------------


@pytest.mark.docker
async def test_rollout_through_two_workers_drops_nothing(
    tmp_path: Path, test_images: dict[str, str], new_name: Callable[[str], str]
) -> None:
    daemon = Daemon(tmp_path, config={"proxy": {"workers": 2}})
    daemon.start()
    try:
        assert "workers=2" in daemon.log_path.read_text()
        async with Api(daemon) as api:
            name = new_name("wroll")
            await api.ok("POST", "/v1/deployments", web_spec(name, 3))
            await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
            result, _ = await rollout_under_load(daemon, api, name, concurrency=16)
            assert set(result.keys) == {"1", "2"}
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(daemon.socket))
                ) as session,
                session.get("http://patrd/metrics") as response,
            ):
                metrics = await response.text()
            # Counted in the workers, summed by the daemon: every request of the load.
            line = next(
                line
                for line in metrics.splitlines()
                if line.startswith("patrd_proxy_requests_total{")
                and f'deployment="{name}"' in line
                and 'code="2xx"' in line
            )
            assert float(line.rsplit(" ", 1)[1]) >= result.statuses[200], line
    finally:
        daemon.stop()


async def test_daemon_with_the_proxy_in_process_on_uvloop(tmp_path: Path) -> None:
    """proxy.workers = 0: no worker process; the daemon's own loop is uvloop."""
    daemon = Daemon(tmp_path, config={"proxy": {"workers": 0, "event_loop": "uvloop"}})
    daemon.start()
    try:
        assert "event=proxy.started" in daemon.log_path.read_text()
        assert "event_loop=uvloop" in daemon.log_path.read_text()
        children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children")  # type: ignore[union-attr]
        assert "patrd.proxy.worker" not in " ".join(
            Path(f"/proc/{pid}/cmdline").read_text() for pid in children.read_text().split()
        )
        assert await get(daemon.proxy_port, host="nothing.test.localhost") == (
            404,
            "no deployment serves this host\n",
        )
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(daemon.socket))
            ) as session,
            session.get("http://patrd/metrics") as response,
        ):
            assert "patrd_proxy_active_requests 0.0" in await response.text()
    finally:
        daemon.stop()
