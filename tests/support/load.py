"""A bounded load generator through the proxy: N keep-alive clients, counted results."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from tests.support.waits import rolled_out, until

if TYPE_CHECKING:
    from tests.support.daemon import Api, Daemon


@dataclass
class LoadResult:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    keys: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)  # connection errors
    bad: list[str] = field(default_factory=list)  # a sample of non-2xx answers
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failures(self) -> int:
        return len(self.errors) + sum(n for s, n in self.statuses.items() if not 200 <= s < 300)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Load:
    """``concurrency`` clients GET ``path`` until stopped (or ``max_s``, ``max_requests``)."""

    def __init__(
        self,
        proxy_port: int,
        host: str,
        path: str = "/",
        *,
        concurrency: int = 8,
        pause_s: float = 0.02,
        max_s: float = 180.0,
        max_requests: int = 200_000,
        key: Callable[[str], str] | None = None,
    ) -> None:
        self._url = f"http://127.0.0.1:{proxy_port}{path}"
        self._host = host
        self._concurrency = concurrency
        self._pause = pause_s
        self._deadline = time.monotonic() + max_s
        self._max = max_requests
        self._key = key
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.result = LoadResult()

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self._concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> LoadResult:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._session is not None:
            await self._session.close()
            self._session = None
        return self.result

    async def _client(self) -> None:
        assert self._session is not None
        while (
            not self._stop.is_set()
            and time.monotonic() < self._deadline
            and self.result.total < self._max
        ):
            start = time.perf_counter()
            try:
                async with self._session.get(self._url, headers={"Host": self._host}) as resp:
                    body = await resp.text()
                    self.result.statuses[resp.status] += 1
                    if self._key is not None and resp.status == 200:
                        self.result.keys[self._key(body)] += 1
                    if resp.status >= 300 and len(self.result.bad) < 20:
                        self.result.bad.append(f"{resp.status}: {body[:80]}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.result.errors.append(repr(exc))
            self.result.latencies_ms.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(self._pause)


def env_value(name: str) -> Callable[[str], str]:
    """Key function: the value of ``name`` in a ``/cgi-bin/env`` body."""

    def key(body: str) -> str:
        for line in body.splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1]
        return "?"

    return key


async def rollout_under_load(
    daemon: Daemon, api: Api, name: str, concurrency: int = 8
) -> tuple[LoadResult, float]:
    """Roll ``name`` from revision 1 to 2 (an env change) while clients GET
    ``/cgi-bin/env`` through the proxy, each answer counted by the revision that
    served it. Asserts nothing was dropped and both revisions served; returns the
    load's result and the seconds the rollout took."""
    async with Load(
        daemon.proxy_port,
        daemon.host(name),
        "/cgi-bin/env",
        key=env_value("PATRD_REVISION"),
        concurrency=concurrency,
    ) as load:
        await asyncio.sleep(1)
        started = time.monotonic()
        await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
        await until(lambda: rolled_out(api, name, 2), 60, "revision 2 deployed", daemon)
        took = time.monotonic() - started
        await asyncio.sleep(1)
    result = load.result
    assert result.errors == [], result.errors[:5]
    assert result.failures == 0, (result.statuses, result.bad)
    assert result.keys["1"] > 0 and result.keys["2"] > 0, result.keys
    return result, took
