"""Per-instance resource metrics: cgroup counters → rates → history in SQLite.

Three modules:

* :mod:`patrd.observe.counters`: one container's cumulative counters (from its
  cgroup, else Docker's stats endpoint) and the rates between two readings.
* :class:`Sampler` (here): every ``metrics.interval_s`` reads every running
  instance's counters (in one worker thread: no file I/O on the loop; on a
  swarm, tasks' counters come from their nodes' agents, patrd/observe/agent_client.py), turns
  two readings into rates and keeps the latest per container for the
  autoscaler, the API and Prometheus.
* :mod:`patrd.observe.history`: :class:`~patrd.observe.history.History`, its own
  SQLite file (``metrics.db`` in the data dir), downsampled so its size is
  bounded by the instance count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from patrd.model.errors import EngineError, StoreError
from patrd.model.instances import ContainerState, Instance
from patrd.model.naming import instance_name
from patrd.observe.counters import (
    CgroupReader,
    Counters,
    InstanceSample,
    counters_from_docker_stats,
    rates,
)
from patrd.observe.history import History


class StatsEngine(Protocol):
    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]: ...

    async def stats(self, container_id: str) -> dict[str, Any]: ...


class RemoteFigures(Protocol):
    """Readings the sampler cannot take here (swarm tasks: patrd/observe/agent_client.py)."""

    async def read(self, ids: Sequence[str]) -> dict[str, Counters | None]: ...


class DeploymentSource(Protocol):
    async def list_deployments(self) -> list[Any]: ...  # store.DeploymentRecord


class Sampler:
    """Samples every running instance each ``interval_s``; keeps the latest rates."""

    FALLBACK_CONCURRENCY = 4

    def __init__(
        self,
        engine: StatsEngine,
        store: DeploymentSource,
        reader: CgroupReader,
        interval_s: float,
        history: History | None = None,
        remote: RemoteFigures | None = None,
    ) -> None:
        self._engine = engine
        self._remote = remote
        self._store = store
        self._reader = reader
        self.interval_s = interval_s
        self._history = history
        self._prev: dict[str, Counters] = {}
        self.latest: dict[str, InstanceSample] = {}  # container id → last sample
        self.last_tick_s = 0.0  # how long the last tick took (bench, logs)
        self.ticks = 0
        self._log = structlog.get_logger("patrd.observe.metrics")

    def cpu_fraction(self, container_id: str) -> float | None:
        sample = self.latest.get(container_id)
        return sample.cpu_fraction if sample is not None else None

    def samples(self, deployment_id: str | None = None) -> list[InstanceSample]:
        return [s for s in self.latest.values() if deployment_id in (None, s.deployment_id)]

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except (EngineError, StoreError) as exc:
                self._log.warning("metrics_tick_failed", error=str(exc))
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.1, self.interval_s - elapsed))

    async def tick(self) -> list[InstanceSample]:
        started = time.monotonic()
        instances = [
            i for i in await self._engine.list_instances() if i.state is ContainerState.RUNNING
        ]
        records = {r.id: r for r in await self._store.list_deployments()}
        ids = [i.container_id for i in instances]
        readings = await self._remote.read(ids) if self._remote is not None else {}
        local = [cid for cid in ids if cid not in readings]
        readings.update(await asyncio.to_thread(self._read_all, local))
        missing = [cid for cid in local if readings.get(cid) is None]
        if missing:
            readings.update(await self._docker_stats(missing))
        now = time.time()
        fresh: dict[str, InstanceSample] = {}
        for inst in instances:
            cur = readings.get(inst.container_id)
            if cur is None:
                continue
            prev = self._prev.get(inst.container_id)
            self._prev[inst.container_id] = cur
            record = records.get(inst.deployment_id)
            fallback = float(record.spec.resources.cpu) if record is not None else 1.0
            if prev is None:
                continue
            r = rates(prev, cur, fallback)
            if r is None:
                continue
            cores, allocation, rx, tx, rd, wr = r
            fresh[inst.container_id] = InstanceSample(
                deployment_id=inst.deployment_id,
                deployment=inst.deployment,
                instance=instance_name(inst.deployment, inst.slot),
                container_id=inst.container_id,
                at=now,
                cpu_cores=cores,
                cpu_allocation=allocation,
                memory_bytes=cur.memory_bytes,
                memory_limit=cur.memory_limit,
                rx_bps=rx,
                tx_bps=tx,
                read_bps=rd,
                write_bps=wr,
                totals=cur,
                source=cur.source,
            )
        live = set(ids)
        for cid in [c for c in self._prev if c not in live]:
            del self._prev[cid]
        self._reader.forget(live)
        self.latest = fresh
        self.ticks += 1
        if self._history is not None and fresh:
            await self._history.add(int(now), fresh.values())
            await self._history.maintain(int(now), set(records))
        self.last_tick_s = time.monotonic() - started
        return list(fresh.values())

    def _read_all(self, ids: Sequence[str]) -> dict[str, Counters | None]:
        return {cid: self._reader.read(cid) for cid in ids}

    async def _docker_stats(self, ids: Sequence[str]) -> dict[str, Counters | None]:
        """Docker's stats endpoint, for containers whose cgroup is not readable here."""
        gate = asyncio.Semaphore(self.FALLBACK_CONCURRENCY)

        async def one(cid: str) -> tuple[str, Counters | None]:
            async with gate:
                try:
                    stats = await self._engine.stats(cid)
                except EngineError:
                    return cid, None
                return cid, counters_from_docker_stats(stats, time.monotonic())

        return dict(await asyncio.gather(*(one(cid) for cid in ids)))
