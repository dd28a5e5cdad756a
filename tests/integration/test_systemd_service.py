"""patrd as a service: sd_notify and the watchdog, SIGTERM drain, database trouble.

The daemon runs as a real process under a *fake* service manager: the test
binds the unix datagram socket systemd would pass in ``$NOTIFY_SOCKET`` and
reads what patrd sends. No test-only code path exists in the daemon: the
frozen-loop test stops the whole process with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, _health
from tests.support.waits import until

# serial: watchdog and grace-period timing (scripts/test runs these alone, after the parallel part).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

IMAGE = {"image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}


@dataclass
class FakeManager:
    """Receives sd_notify datagrams on its own thread, with arrival times."""

    path: Path
    on_ready: list[object] = field(default_factory=list)
    messages: list[tuple[float, bytes]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    probe: object = None  # called (on this thread) the moment READY=1 arrives

    def __enter__(self) -> FakeManager:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data))
            if b"READY=1" in data.split(b"\n") and callable(self.probe):
                self.on_ready.append(self.probe())

    def times(self, message: bytes, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if message in m.split(b"\n") and t >= since]

    def texts(self) -> list[bytes]:
        return [m for _, m in list(self.messages)]

    def lines(self) -> set[bytes]:
        """Every KEY=VALUE line received, whichever message carried it."""
        return {line for m in self.texts() for line in m.split(b"\n")}


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[FakeManager]:
    with FakeManager(tmp_path / "notify.sock") as m:
        yield m


def _proxy_get(daemon: Daemon, name: str) -> int:
    """Blocking GET through the proxy (used from the manager's thread)."""
    try:
        with socket.create_connection(("127.0.0.1", daemon.proxy_port), timeout=2) as s:
            s.sendall(f"GET / HTTP/1.0\r\nHost: {daemon.host(name)}\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return 0


async def _wait_proxied(daemon: Daemon, name: str, timeout: float = 30) -> None:
    async def served() -> bool:
        return await asyncio.to_thread(_proxy_get, daemon, name) == 200

    await until(served, timeout, f"{name} served", daemon, interval=0.05)


async def status_line(manager: FakeManager, line: bytes, timeout: float = 10) -> None:
    """Wait until the service manager has been told ``line``."""
    await until(lambda: line in manager.lines(), timeout, f"{line!r} sent", detail=manager.texts)


async def test_notify_ready_status_watchdog_and_stopping(
    tmp_path: Path, manager: FakeManager, test_images: dict[str, str], new_name
) -> None:
    name = new_name("sd")
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        async with Api(daemon) as api:
            await api.ok("POST", "/v1/deployments", {"name": name, **IMAGE})
            await api.wait_status(name, "running")
    finally:
        assert daemon.stop() == 0

    # Restart under the fake manager with a 1 s watchdog: pings every 500 ms.
    # The moment READY=1 arrives, the API and the proxy must already serve the
    # deployment the reconciler adopted.
    manager.probe = lambda: (_health(daemon.socket), _proxy_get(daemon, name))
    daemon.env = {"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "1000000"}
    daemon.start()
    try:
        await asyncio.sleep(3.2)
        texts = manager.texts()
        assert texts[0] == b"STATUS=starting"
        ready = [m for m in texts if m.startswith(b"READY=1")]
        assert len(ready) == 1 and ready[0].startswith(b"READY=1\nSTATUS=1 deployments, "), texts
        assert manager.on_ready == [(True, 200)], "READY=1 before the API/proxy served"
        # An adopted instance may be re-checked first.
        await status_line(manager, b"STATUS=1 deployments, 1 running")

        pings = manager.times(b"WATCHDOG=1")
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(pings) >= 6, texts
        assert 0.45 <= statistics.median(gaps) <= 0.55, gaps
        assert max(gaps) < 1.0, f"a gap reached the watchdog timeout: {gaps}"
        print(f"watchdog cadence: median {statistics.median(gaps):.3f}s, max {max(gaps):.3f}s")

        # STATUS= follows the deployments: stop it → "0 running".
        async with Api(daemon) as api:
            await api.ok("POST", f"/v1/deployments/{name}/stop")
            await api.wait_status(name, "stopped")
        await status_line(manager, b"STATUS=1 deployments, 0 running")
    finally:
        code = daemon.stop()
    assert code == 0
    assert manager.texts()[-1].startswith(b"STOPPING=1\nSTATUS=stopping")


async def test_a_frozen_loop_stops_the_watchdog_pings(
    tmp_path: Path, manager: FakeManager, test_images: dict[str, str]
) -> None:
    daemon = Daemon(tmp_path, env={"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "400000"})
    daemon.start()
    assert daemon.proc is not None
    try:
        await asyncio.sleep(1.0)
        assert len(manager.times(b"WATCHDOG=1")) >= 4
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        await asyncio.sleep(1.5)
        assert manager.times(b"WATCHDOG=1", since=frozen_at + 0.05) == [], "pinged while frozen"
        os.kill(daemon.proc.pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        await asyncio.sleep(1.0)
        resumed = manager.times(b"WATCHDOG=1", since=thawed_at)
        assert resumed and resumed[0] - thawed_at < 0.5, "pings resume with the loop"
        assert _health(daemon.socket)
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
        assert daemon.stop() == 0


# --- SIGTERM drains in-flight requests ---------------------------------------------


async def _slow_request(daemon: Daemon, name: str, got_first: asyncio.Event) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"http://127.0.0.1:{daemon.proxy_port}/cgi-bin/slow",
            headers={"Host": daemon.host(name)},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as r,
    ):
        body = b""
        try:
            async for chunk in r.content.iter_any():
                body += chunk
                got_first.set()
        except aiohttp.ClientPayloadError:
            pass  # cut off at the drain deadline
        return r.status, body.decode()


@pytest.mark.parametrize(
    ("drain_s", "complete"), [(10, True), (2, False)], ids=["within-grace", "past-grace"]
)
async def test_sigterm_drains_in_flight_requests_and_exits_within_grace(
    tmp_path: Path, test_images: dict[str, str], new_name, drain_s: int, complete: bool
) -> None:
    """/cgi-bin/slow streams 5 lines over ~4 s; SIGTERM arrives after the first."""
    name = new_name("drain")
    daemon = Daemon(tmp_path, config={"proxy": {"drain_timeout_s": drain_s}})
    daemon.start()
    assert daemon.proc is not None
    try:
        async with Api(daemon) as api:
            await api.ok("POST", "/v1/deployments", {"name": name, **IMAGE})
            await api.wait_status(name, "running")
        await _wait_proxied(daemon, name)
        got_first = asyncio.Event()
        slow = asyncio.create_task(_slow_request(daemon, name, got_first))
        await asyncio.wait_for(got_first.wait(), 10)
        daemon.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        await asyncio.sleep(0.3)
        # Listeners are closed at once: new connections are refused while draining.
        assert await asyncio.to_thread(_proxy_get, daemon, name) == 0
        code = await asyncio.to_thread(daemon.proc.wait, drain_s + 10)
        exit_s = time.monotonic() - sent
        status, body = await slow
    finally:
        daemon.stop()
    assert code == 0
    assert status == 200
    lines = body.count("line")
    print(f"SIGTERM (drain_timeout_s={drain_s}): exited after {exit_s:.2f}s, {lines} lines")
    if complete:
        assert body.splitlines() == [f"line {i}" for i in range(1, 6)], body
        assert 2.5 < exit_s < 6.0, exit_s  # waited for the stream, not for the deadline
    else:
        assert "line 5" not in body
        assert drain_s - 0.5 < exit_s < drain_s + 3.0, exit_s
    # The containers keep running after patrd exits.
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=patrd.deployment={name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(out.split()) == 1


# --- database trouble: locked, full ------------------------------------------------


async def _create(api: Api, name: str, **extra: object) -> tuple[int, dict[str, object]]:
    body = {"name": name, **IMAGE, "deploy_on_create": False, **extra}
    code, data = await api.call("POST", "/v1/deployments", body)
    return code, data


async def test_database_locked_answers_503_and_the_proxy_keeps_serving(
    daemon: Daemon, api: Api, new_name
) -> None:
    web = new_name("web")
    await api.ok("POST", "/v1/deployments", {"name": web, **IMAGE})
    await api.wait_status(web, "running")
    await _wait_proxied(daemon, web)

    # Another process holds the write lock (as a stuck sqlite3 shell would).
    holder = sqlite3.connect(daemon.data_dir / "patrd.db", timeout=0.1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        code, err = await _create(api, new_name("locked"))
        waited = time.monotonic() - started
        assert code == 503, err
        assert err["error"] == "store_unavailable"
        assert "locked" in str(err["message"]), err
        assert 4.0 < waited < 8.0, f"waited {waited:.1f}s (busy_timeout is 5 s)"
        # Reads and traffic go on.
        assert (await api.call("GET", f"/v1/deployments/{web}"))[0] == 200
        assert await asyncio.to_thread(_proxy_get, daemon, web) == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    after = new_name("after")
    assert (await _create(api, after))[0] == 201
    names = {d["name"] for d in (await api.ok("GET", "/v1/deployments"))["deployments"]}
    assert {web, after} <= names
    print(f"database locked: 503 after {waited:.1f}s")


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs as the data dir: the kernel's own ENOSPC, not a simulation."""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_answers_503_loses_nothing_and_keeps_serving(
    tmp_path: Path, tiny_data_dir: Path, test_images: dict[str, str], new_name
) -> None:
    daemon = Daemon(tmp_path)
    assert daemon.data_dir == tiny_data_dir
    daemon.start()
    acked: list[str] = []
    try:
        async with Api(daemon) as api:
            web = new_name("web")
            await api.ok("POST", "/v1/deployments", {"name": web, **IMAGE})
            await api.wait_status(web, "running")
            await _wait_proxied(daemon, web)
            acked.append(web)

            filler = tiny_data_dir / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
            )
            # Keep writing until the database refuses (WAL space already
            # allocated may take a few more small writes first).
            refused: dict[str, object] | None = None
            big_env = {f"V{i}": "x" * 2000 for i in range(20)}
            for _ in range(100):
                name = new_name("full")
                code, data = await _create(api, name, env=big_env)
                if code == 201:
                    acked.append(name)
                    continue
                assert code == 503, data
                refused = data
                break
            assert refused is not None, "the database never reported the disk full"
            acked_before_full = len(acked)
            assert refused["error"] == "store_unavailable"
            assert "full" in str(refused["message"]), refused
            # Nothing half-written is visible; reads and traffic go on.
            listed = (await api.ok("GET", "/v1/deployments"))["deployments"]
            assert sorted(d["name"] for d in listed) == sorted(acked)
            for _ in range(5):
                assert await asyncio.to_thread(_proxy_get, daemon, web) == 200
            assert (await api.call("GET", "/v1/health"))[0] == 200
            # An instance that dies while the disk is full is started again all the
            # same (its "restart" event cannot be written; the restart matters more).
            [cid] = subprocess.run(
                ["docker", "ps", "-q", "--filter", f"label=patrd.deployment={web}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
            await asyncio.sleep(0.5)
            await _wait_proxied(daemon, web, timeout=30)

            filler.unlink()
            freed = new_name("freed")
            assert (await _create(api, freed))[0] == 201
            acked.append(freed)
    finally:
        daemon.kill9()  # no clean shutdown: what was acknowledged must be on disk
    daemon.start()
    try:
        async with Api(daemon) as api:
            listed = (await api.ok("GET", "/v1/deployments"))["deployments"]
            names = {d["name"] for d in listed}
            assert set(acked) <= names, "an acknowledged write was lost"
            await api.wait_status(acked[0], "running")
            assert await asyncio.to_thread(_proxy_get, daemon, acked[0]) == 200
    finally:
        daemon.stop()
    print(f"disk full: {acked_before_full} writes acknowledged, then 503: {refused['message']}")
