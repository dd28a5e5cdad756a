"""How many container lists the daemon asks Docker for while idle (issue: scale).

The daemon talks to the real Docker engine through a relay on a unix socket
of the test's own, which counts ``GET /containers/json`` requests. Each
periodic resync lists every container once and hands each deployment's
worker its part, instead of one list per deployment: with N deployments an
idle daemon lists about once per resync (and once per metrics pass), not
N + 1 times.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Api, Daemon

pytestmark = pytest.mark.timeout(300)

DOCKER = "/var/run/docker.sock"
LIST = re.compile(rb"GET /v[0-9.]+/containers/json")
DEPLOYMENTS = 6
RESYNC_S = 1.0
WINDOW_S = 8.0


class Relay:
    """A unix-socket relay to Docker, in a thread of its own, counting container lists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lists = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        assert self._ready.wait(10), "the relay did not start"
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._client, str(self.path))
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(DOCKER)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer, count=True),
            self._pump(up_reader, writer, count=False),
            return_exceptions=True,
        )

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, count: bool
    ) -> None:
        tail = b""
        try:
            while chunk := await src.read(65536):
                if count:
                    seen = tail + chunk
                    self.lists += len(LIST.findall(seen)) - len(LIST.findall(tail))
                    tail = seen[-64:]
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    with Relay(tmp_path / "docker.sock") as r:
        yield r


async def test_an_idle_resync_lists_containers_once_for_all_deployments(
    tmp_path: Path, relay: Relay, test_images: dict[str, str], names: list[str]
) -> None:
    daemon = Daemon(
        tmp_path / "patrd",
        config={
            "docker": {"socket": f"unix://{relay.path}", "resync_interval_s": RESYNC_S},
            "metrics": {"interval_s": 5.0},
        },
    )
    daemon.workdir.mkdir()
    daemon.start()
    try:
        async with Api(daemon) as api:
            for i in range(DEPLOYMENTS):  # bounded
                name = f"calls{i}-{uuid.uuid4().hex[:6]}"
                names.append(name)
                await api.ok(
                    "POST",
                    "/v1/deployments",
                    {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
                )
            for name in names:
                await api.wait_status(name, "running", timeout=120)
            await asyncio.sleep(3 * RESYNC_S)  # settled: probes done, no actions left
            before, started = relay.lists, time.monotonic()
            await asyncio.sleep(WINDOW_S)
            lists = relay.lists - before
            elapsed = time.monotonic() - started
            resyncs = elapsed / RESYNC_S
            # One per resync and per metrics pass, a few extra for wakes; one per
            # deployment per resync would be DEPLOYMENTS times as many.
            assert lists >= resyncs / 2, f"{lists} lists in {elapsed:.1f} s: is the relay used?"
            assert lists <= 2 * resyncs + 4, f"{lists} container lists in {elapsed:.1f} s"
            for name in names:
                assert (await api.ok("GET", f"/v1/deployments/{name}"))["status"] == "running"
    finally:
        daemon.stop()
