"""The node's own health: host CPU, memory, swap, load, disks, network (psutil).

``sample()`` reads psutil (blocking, cheap: run it in a thread); ``check()``
is pure: snapshot + thresholds + what was already alerted → node events to
write. ``NodeWatcher.run`` (supervised) samples every ``[node] interval_s``,
keeps the latest snapshot for ``GET /v1/node`` and ``/metrics``, and writes
``disk.low`` / ``memory.pressure`` node events when a threshold is crossed
(once per crossing; re-armed when the figure is back 2 points above it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from patrd.engine.diskguard import DEFAULT_DOCKER_ROOT, DockerInfo, docker_data_root
from patrd.model.errors import StoreError
from patrd.notify.config import NodeConfig
from patrd.state.store import Store

log = structlog.get_logger("patrd.observe.nodehealth")

REARM_POINTS = 2.0  # hysteresis: a threshold fires again only after recovering this much


@dataclass(frozen=True, slots=True)
class Disk:
    label: str  # "docker", "data", or the path of a [node] watch_paths entry
    path: str
    mount: str
    total: int
    used: int
    free: int
    used_percent: float

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    cpu_percent: float
    cpu_count: int
    load: tuple[float, float, float]
    memory_total: int
    memory_available: int
    memory_used: int
    memory_percent: float
    swap_total: int
    swap_used: int
    swap_percent: float
    net_bytes_sent: int
    net_bytes_recv: int
    net_packets_sent: int
    net_packets_recv: int
    boot_time: float
    disks: tuple[Disk, ...] = ()
    missing: tuple[str, ...] = ()  # watched paths that do not exist

    @property
    def memory_available_percent(self) -> float:
        return 100.0 * self.memory_available / self.memory_total if self.memory_total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "cpu": {"percent": self.cpu_percent, "count": self.cpu_count},
            "load": {"1m": self.load[0], "5m": self.load[1], "15m": self.load[2]},
            "memory": {
                "total": self.memory_total,
                "available": self.memory_available,
                "used": self.memory_used,
                "percent": self.memory_percent,
            },
            "swap": {
                "total": self.swap_total,
                "used": self.swap_used,
                "percent": self.swap_percent,
            },
            "disks": [{**asdict(d), "free_percent": round(d.free_percent, 2)} for d in self.disks],
            "missing": list(self.missing),
            "network": {
                "bytes_sent": self.net_bytes_sent,
                "bytes_recv": self.net_bytes_recv,
                "packets_sent": self.net_packets_sent,
                "packets_recv": self.net_packets_recv,
            },
            "boot_time": self.boot_time,
            "uptime_s": round(self.at - self.boot_time, 1),
        }


async def node_config(config: NodeConfig, engine: DockerInfo) -> NodeConfig:
    """``[node]`` with Docker's data root filled in from Docker when not set."""
    if config.docker_root is not None:
        return config
    root = await docker_data_root(engine)  # None: Docker down at start, the default path
    return replace(config, docker_root=Path(root)) if root else config


def watched(config: NodeConfig, data_dir: Path) -> list[tuple[str, Path]]:
    """(label, path) of every mount reported and guarded."""
    paths = [("docker", config.docker_root or Path(DEFAULT_DOCKER_ROOT)), ("data", data_dir)]
    paths += [(str(p), p) for p in config.watch_paths]
    return paths


def sample(paths: Sequence[tuple[str, Path]]) -> Snapshot:
    """One reading of the host (blocking; ``cpu_percent`` since the previous call)."""
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    net = psutil.net_io_counters()
    disks = []
    missing = []
    for label, path in paths:
        try:
            usage = psutil.disk_usage(str(path))
        except OSError:
            missing.append(str(path))
            continue
        disks.append(
            Disk(
                label=label,
                path=str(path),
                mount=_mount_of(path),
                total=usage.total,
                used=usage.used,
                free=usage.free,
                used_percent=usage.percent,
            )
        )
    return Snapshot(
        at=time.time(),
        cpu_percent=psutil.cpu_percent(interval=None),
        cpu_count=psutil.cpu_count() or 1,
        load=os.getloadavg(),
        memory_total=vm.total,
        memory_available=vm.available,
        memory_used=vm.used,
        memory_percent=vm.percent,
        swap_total=sw.total,
        swap_used=sw.used,
        swap_percent=sw.percent,
        net_bytes_sent=net.bytes_sent,
        net_bytes_recv=net.bytes_recv,
        net_packets_sent=net.packets_sent,
        net_packets_recv=net.packets_recv,
        boot_time=psutil.boot_time(),
        disks=tuple(disks),
        missing=tuple(missing),
    )


def _mount_of(path: Path) -> str:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


@dataclass(frozen=True, slots=True)
class NodeEvent:
    kind: str
    message: str


def check(
    snap: Snapshot, config: NodeConfig, alerted: frozenset[str]
) -> tuple[frozenset[str], list[NodeEvent]]:
    """Pure: the events a snapshot calls for, and what stays alerted afterwards.

    ``alerted`` holds keys (``disk:<label>``, ``memory``) under their threshold
    at the last check; a key fires once when it goes under and is dropped once
    it is back ``REARM_POINTS`` above.
    """
    now_alerted = set(alerted)
    events: list[NodeEvent] = []
    if config.disk_low_percent > 0:
        for disk in snap.disks:
            key = f"disk:{disk.label}"
            if disk.free_percent < config.disk_low_percent:
                if key not in alerted:
                    now_alerted.add(key)
                    events.append(
                        NodeEvent(
                            "disk.low",
                            f"{disk.label} ({disk.path} on {disk.mount}): "
                            f"{disk.free_percent:.1f}% free ({_gib(disk.free)} of "
                            f"{_gib(disk.total)}), under {config.disk_low_percent:g}%",
                        )
                    )
            elif disk.free_percent >= config.disk_low_percent + REARM_POINTS:
                now_alerted.discard(key)
    if config.memory_low_percent > 0 and snap.memory_total:
        available = snap.memory_available_percent
        if available < config.memory_low_percent:
            if "memory" not in alerted:
                now_alerted.add("memory")
                events.append(
                    NodeEvent(
                        "memory.pressure",
                        f"{available:.1f}% of memory available ({_gib(snap.memory_available)} "
                        f"of {_gib(snap.memory_total)}), under {config.memory_low_percent:g}%; "
                        f"swap {snap.swap_percent:.0f}% used",
                    )
                )
        elif available >= config.memory_low_percent + REARM_POINTS:
            now_alerted.discard("memory")
    return frozenset(now_alerted), events


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass
class NodeWatcher:
    store: Store
    config: NodeConfig
    data_dir: Path
    latest: Snapshot | None = None
    alerted: frozenset[str] = frozenset()
    samples: int = 0
    events: dict[str, int] = field(default_factory=dict)

    async def snapshot(self) -> Snapshot:
        """A fresh reading (CPU: since the previous one); kept as the latest."""
        snap = await asyncio.to_thread(sample, watched(self.config, self.data_dir))
        self.latest = snap
        self.samples += 1
        return snap

    async def run(self) -> None:
        while True:
            snap = await self.snapshot()
            self.alerted, events = check(snap, self.config, self.alerted)
            for event in events:
                self.events[event.kind] = self.events.get(event.kind, 0) + 1
                log.warning("node." + event.kind.replace(".", "_"), message=event.message)
                try:
                    await self.store.add_node_event(event.kind, event.message)
                except StoreError as exc:  # a full disk may be why: the log has it
                    log.warning("node.event_not_recorded", kind=event.kind, error=str(exc))
            await asyncio.sleep(self.config.interval_s)


class NodeCollector(Collector):
    """``patrd_node_*`` for ``GET /metrics``: the watcher's latest snapshot."""

    def __init__(self, watcher: NodeWatcher) -> None:
        self._w = watcher

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        snap = self._w.latest
        if snap is None:
            return
        yield GaugeMetricFamily("patrd_node_cpu_percent", "host CPU busy", value=snap.cpu_percent)
        load = GaugeMetricFamily("patrd_node_load", "load average", labels=["window"])
        for window, value in zip(("1m", "5m", "15m"), snap.load, strict=True):
            load.add_metric([window], value)
        yield load
        memory = GaugeMetricFamily("patrd_node_memory_bytes", "host memory", labels=["kind"])
        memory.add_metric(["total"], snap.memory_total)
        memory.add_metric(["available"], snap.memory_available)
        memory.add_metric(["used"], snap.memory_used)
        yield memory
        swap = GaugeMetricFamily("patrd_node_swap_bytes", "host swap", labels=["kind"])
        swap.add_metric(["total"], snap.swap_total)
        swap.add_metric(["used"], snap.swap_used)
        yield swap
        disk = GaugeMetricFamily(
            "patrd_node_disk_bytes", "watched mounts", labels=["label", "mount", "kind"]
        )
        for d in snap.disks:
            for kind, value in (("total", d.total), ("used", d.used), ("free", d.free)):
                disk.add_metric([d.label, d.mount, kind], value)
        yield disk
        net = CounterMetricFamily(
            "patrd_node_network_bytes", "host network traffic", labels=["direction"]
        )
        net.add_metric(["sent"], snap.net_bytes_sent)
        net.add_metric(["received"], snap.net_bytes_recv)
        yield net
        events = CounterMetricFamily(
            "patrd_node_events", "node health events written", labels=["kind"]
        )
        for kind, n in sorted(self._w.events.items()):
            events.add_metric([kind], n)
        yield events
