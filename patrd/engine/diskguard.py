"""The disk guard: no image pull while Docker's or patrd's disk is nearly full.

``disk.min_free`` is a size (``"2GiB"``, ``"500MB"``, bytes as an integer), a
share of the filesystem (``"5%"``), or both (``"2GiB or 5%"``, the default):
then the smaller of the two counts, so a small disk is not held to 2 GiB and a
big one not to 5 %. The paths watched are Docker's data root (where images
land) and patrd's data dir (the database, kept logs, config files).

Below the threshold the controller refuses pulls (an event and a status reason
say why; a local copy of the image is still used), the image collector runs at
once, and ``/metrics`` shows the free bytes. Parsing and the verdict are pure;
:class:`DiskGuard` reads the disks (``psutil.disk_usage``, in a thread).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import psutil
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from patrd.model.errors import ConfigError, EngineError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
_PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")


@dataclass(frozen=True, slots=True)
class MinFree:
    """The free space below which pulls are refused; the smaller of the parts set."""

    size: int | None = None  # bytes
    percent: float | None = None  # of the filesystem's size

    def threshold(self, total: int) -> int:
        parts = []
        if self.size is not None:
            parts.append(self.size)
        if self.percent is not None:
            parts.append(int(total * self.percent / 100))
        return min(parts) if parts else 0

    def __str__(self) -> str:
        parts = []
        if self.size is not None:
            parts.append(format_bytes(self.size))
        if self.percent is not None:
            parts.append(f"{self.percent:g}%")
        return " or ".join(parts)


def parse_min_free(text: str, key: str) -> MinFree:
    size: int | None = None
    percent: float | None = None
    for part in text.lower().split(" or "):
        part = part.strip()
        if (m := _PERCENT_RE.match(part)) is not None and percent is None:
            percent = float(m.group(1))
            if percent > 100:
                raise ConfigError(key, f"{part!r}: a share of the disk is at most 100%")
        elif (m := _SIZE_RE.match(part)) is not None and m.group(2) in _UNITS and size is None:
            size = int(float(m.group(1)) * _UNITS[m.group(2)])
        else:
            raise ConfigError(
                key, f'{text!r} is not a size ("2GiB"), a share ("5%") or both ("2GiB or 5%")'
            )
    return MinFree(size=size, percent=percent)


def format_bytes(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}{unit}"
    return f"{n}B"


@dataclass(frozen=True, slots=True)
class DiskReading:
    role: str  # "docker" (its data root) or "data_dir"
    path: str
    total: int
    free: int


def verdict(readings: Iterable[DiskReading], min_free: MinFree) -> str | None:
    """Why pulls are refused now, or ``None``. Pure."""
    for r in readings:
        threshold = min_free.threshold(r.total)
        if r.free < threshold:
            return (
                f"disk low: {format_bytes(r.free)} free on {r.path} ({r.role}), "
                f"below disk.min_free {min_free} ({format_bytes(threshold)}); "
                "image pulls refused until space is freed"
            )
    return None


DEFAULT_DOCKER_ROOT = "/var/lib/docker"


class DockerInfo(Protocol):
    async def data_root(self) -> str: ...


async def docker_data_root(engine: DockerInfo) -> str | None:
    """Docker's data root as Docker says (``docker info``); ``None`` while it does not answer.

    The one place patrd asks: the disk guard (:func:`guarded_paths`) and the node
    watcher (``patrd.observe.nodehealth.node_config``) both come here.
    """
    try:
        root = await engine.data_root()
    except EngineError:
        return None
    return root or None


def guarded_paths(
    engine: DockerInfo, data_dir: str
) -> Callable[[], Awaitable[list[tuple[str, str]]]]:
    """(role, path) pairs for :class:`DiskGuard`: Docker's data root (asked until it
    answers, then kept) and patrd's data dir."""
    root: list[str] = []

    async def paths() -> list[tuple[str, str]]:
        if not root and (answer := await docker_data_root(engine)) is not None:
            root.append(answer)
        return [*(("docker", r) for r in root), ("data_dir", data_dir)]

    return paths


def read_disk(role: str, path: str) -> DiskReading:
    usage = psutil.disk_usage(path)
    return DiskReading(role=role, path=path, total=int(usage.total), free=int(usage.free))


class DiskGuard:
    """Reads the disks (at most every ``max_age_s``) and says whether pulls may go on."""

    def __init__(
        self,
        paths: Callable[[], Awaitable[Sequence[tuple[str, str]]]],
        min_free: MinFree,
        on_low: Callable[[], None] = lambda: None,
        max_age_s: float = 5.0,
    ) -> None:
        self._paths = paths  # (role, path) pairs; Docker's data root is asked of Docker
        self._min_free = min_free
        self._on_low = on_low
        self._max_age_s = max_age_s
        self._read_at = 0.0
        self.readings: tuple[DiskReading, ...] = ()
        self._log = structlog.get_logger("patrd.engine.diskguard")

    async def refresh(self) -> tuple[DiskReading, ...]:
        readings = []
        for role, path in await self._paths():
            try:
                readings.append(await asyncio.to_thread(read_disk, role, path))
            except OSError as exc:
                self._log.warning("disk_unreadable", path=path, error=str(exc))
        self.readings = tuple(readings)
        self._read_at = time.monotonic()
        return self.readings

    async def refusal(self) -> str | None:
        """``None``: pulls may go on. Else the reason (and the image collector is woken)."""
        if time.monotonic() - self._read_at > self._max_age_s:
            await self.refresh()
        reason = verdict(self.readings, self._min_free)
        if reason is not None:
            self._log.warning("pull_refused", reason=reason)
            self._on_low()
        return reason

    async def run(self, interval_s: float) -> None:
        """Keep the readings (and so ``/metrics``) fresh; wake the collector when low."""
        while True:
            await self.refresh()
            if verdict(self.readings, self._min_free) is not None:
                self._on_low()
            await asyncio.sleep(interval_s)


class DiskCollector(Collector):
    """``patrd_disk_free_bytes`` / ``patrd_disk_size_bytes`` / ``patrd_disk_pulls_refused``."""

    def __init__(self, guard: DiskGuard, min_free: MinFree) -> None:
        self._guard = guard
        self._min_free = min_free

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        free = GaugeMetricFamily(
            "patrd_disk_free_bytes", "free bytes on the filesystem", labels=["role", "path"]
        )
        size = GaugeMetricFamily(
            "patrd_disk_size_bytes", "size of the filesystem", labels=["role", "path"]
        )
        threshold = GaugeMetricFamily(
            "patrd_disk_min_free_bytes",
            "disk.min_free for this filesystem: pulls are refused below it",
            labels=["role", "path"],
        )
        for r in self._guard.readings:
            free.add_metric([r.role, r.path], r.free)
            size.add_metric([r.role, r.path], r.total)
            threshold.add_metric([r.role, r.path], self._min_free.threshold(r.total))
        refused = verdict(self._guard.readings, self._min_free) is not None
        yield from (free, size, threshold)
        yield GaugeMetricFamily(
            "patrd_disk_pulls_refused", "1 while image pulls are refused", value=int(refused)
        )
