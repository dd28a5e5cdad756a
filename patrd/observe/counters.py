"""Cumulative counters of one container, and the rates between two readings.

Readers are pure parsers plus path lookup: the counters of one container
straight from its cgroup, v2 (unified) or v1 (per-controller hierarchies, this
build machine's hybrid layout), cgroupfs or systemd driver. Network counters are
not in cgroups: they come from ``/proc/<pid>/net/dev`` of a process of the
container (its network namespace), the pid read from the cgroup's
``cgroup.procs``. Where no cgroup directory is found the sampler
(:mod:`patrd.observe.metrics`) falls back to Docker's stats endpoint
(``one-shot``), parsed by :func:`counters_from_docker_stats`.

:func:`rates` turns two readings into rates: CPU cores used = Δ cpu time / Δ
wall time; CPU *usage* = cores used / the cores the instance is allowed, read
from the cgroup's quota, else the deployment's ``resources.cpu``.

Memory is the working set, as ``docker stats`` and cAdvisor report it: usage
minus inactive file cache.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_UNLIMITED = 1 << 62  # cgroup v1 writes ~2^63 for "no memory limit"

# --- counters and readers ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters of one container at one moment."""

    at: float  # monotonic seconds when read
    cpu_ns: int
    memory_bytes: int  # working set: usage - inactive file cache
    memory_limit: int | None = None
    cpu_limit: float | None = None  # cores (quota / period); None: no quota
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    source: str = "cgroup"  # "cgroup v1", "cgroup v2" or "docker"


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``memory.stat`` / ``cpu.stat``: ``key value`` per line."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value.strip())
    return out


def parse_cpu_max(text: str) -> float | None:
    """v2 ``cpu.max``: ``"max 100000"`` (no quota) or ``"150000 100000"`` → 1.5 cores."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if period > 0 else None


def parse_v1_quota(quota_text: str, period_text: str) -> float | None:
    quota, period = int(quota_text.strip()), int(period_text.strip())
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_memory_limit(text: str) -> int | None:
    value = text.strip()
    if value == "max":
        return None
    limit = int(value)
    return None if limit >= _UNLIMITED else limit


def parse_io_stat(text: str) -> tuple[int, int]:
    """v2 ``io.stat``: ``8:0 rbytes=1 wbytes=2 rios=...`` per device → (read, written)."""
    read = written = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written


def parse_blkio(text: str) -> tuple[int, int]:
    """v1 ``blkio.*io_service_bytes*``: ``8:0 Read 123`` per device and op → (read, written)."""
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[1] == "Read":
            read += int(parts[2])
        elif parts[1] == "Write":
            written += int(parts[2])
    return read, written


def parse_net_dev(text: str) -> tuple[int, int]:
    """``/proc/<pid>/net/dev`` → (received, transmitted) bytes over all but ``lo``."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == "lo" or not rest:
            continue
        fields = rest.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def working_set(usage: int, stat: Mapping[str, int], v2: bool) -> int:
    inactive = stat.get("inactive_file" if v2 else "total_inactive_file", 0)
    return max(0, usage - inactive)


class CgroupReader:
    """Reads a container's counters from ``root`` (``/sys/fs/cgroup``); None if not found.

    This runs for every instance every ``metrics.interval_s`` and was
    most of an idle daemon's CPU, so the files are opened by string path (no
    pathlib per read), a found directory is trusted until a read fails, and
    the limits (memory, CPU quota), which only ``docker update`` changes, are
    read again every ``limits_every`` reads (a minute at the default interval).
    """

    def __init__(
        self,
        root: Path = Path("/sys/fs/cgroup"),
        proc: Path = Path("/proc"),
        limits_every: int = 12,
    ) -> None:
        self.root = root
        self.proc = proc
        self.v2 = (root / "cgroup.controllers").is_file()
        self.limits_every = max(1, limits_every)
        self._dirs: dict[str, dict[str, Path] | None] = {}
        # container id → (memory limit, CPU limit, reads left before reading them again)
        self._limits: dict[str, tuple[int | None, float | None, int]] = {}

    @property
    def layout(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1"

    def forget(self, keep: Iterable[str]) -> None:
        wanted = set(keep)
        for cid in [c for c in self._dirs if c not in wanted]:
            del self._dirs[cid]
        for cid in [c for c in self._limits if c not in wanted]:
            del self._limits[cid]

    def dirs(self, container_id: str) -> dict[str, Path] | None:
        """Controller name → directory (v2: one directory under the key "")."""
        found = self._dirs.get(container_id)
        if found is not None:
            return found  # trusted until a read fails (read() forgets it then)
        found = self._find(container_id)
        self._dirs[container_id] = found
        return found

    def _find(self, cid: str) -> dict[str, Path] | None:
        leaves = (Path("system.slice") / f"docker-{cid}.scope", Path("docker") / cid)
        if self.v2:
            for leaf in leaves:
                if (self.root / leaf / "cpu.stat").is_file():
                    return {"": self.root / leaf}
            return None
        dirs: dict[str, Path] = {}
        for ctrl in ("cpuacct", "cpu", "memory", "blkio"):
            for leaf in leaves:
                candidate = self.root / ctrl / leaf
                if candidate.is_dir():
                    dirs[ctrl] = candidate
                    break
        return dirs if "cpuacct" in dirs and "memory" in dirs else None

    def read(self, container_id: str) -> Counters | None:
        for _ in range(2):  # a second time with the directories looked up afresh
            dirs = self.dirs(container_id)
            if dirs is None:
                return None
            try:
                if self.v2:
                    return self._read_v2(container_id, str(dirs[""]))
                return self._read_v1(container_id, {k: str(v) for k, v in dirs.items()})
            except (OSError, ValueError):
                self._dirs.pop(container_id, None)  # removed meanwhile, or moved
                self._limits.pop(container_id, None)
        return None

    def _limits_of(
        self, cid: str, read: Callable[[], tuple[int | None, float | None]]
    ) -> tuple[int | None, float | None]:
        cached = self._limits.get(cid)
        if cached is not None and cached[2] > 0:
            self._limits[cid] = (cached[0], cached[1], cached[2] - 1)
            return cached[0], cached[1]
        memory, cpu = read()
        self._limits[cid] = (memory, cpu, self.limits_every - 1)
        return memory, cpu

    def _read_v2(self, cid: str, d: str) -> Counters:
        cpu_ns = parse_flat_keyed(_text(f"{d}/cpu.stat"))["usage_usec"] * 1000
        at = time.monotonic()
        usage = int(_text(f"{d}/memory.current"))
        stat = parse_flat_keyed(_text(f"{d}/memory.stat"))
        read = written = None
        with contextlib.suppress(OSError):
            read, written = parse_io_stat(_text(f"{d}/io.stat"))
        rx, tx = self._net(f"{d}/cgroup.procs")
        memory_limit, cpu_limit = self._limits_of(
            cid,
            lambda: (
                parse_memory_limit(_text(f"{d}/memory.max")),
                parse_cpu_max(_text(f"{d}/cpu.max")),
            ),
        )
        return Counters(
            at=at,
            cpu_ns=cpu_ns,
            memory_bytes=working_set(usage, stat, v2=True),
            memory_limit=memory_limit,
            cpu_limit=cpu_limit,
            rx_bytes=rx,
            tx_bytes=tx,
            read_bytes=read,
            write_bytes=written,
            source="cgroup v2",
        )

    def _read_v1(self, cid: str, dirs: dict[str, str]) -> Counters:
        cpu_ns = int(_text(f"{dirs['cpuacct']}/cpuacct.usage"))
        at = time.monotonic()
        mem = dirs["memory"]
        usage = int(_text(f"{mem}/memory.usage_in_bytes"))
        stat = parse_flat_keyed(_text(f"{mem}/memory.stat"))

        def limits() -> tuple[int | None, float | None]:
            cpu_limit = None
            cpu_dir = dirs.get("cpu")
            if cpu_dir is not None:
                with contextlib.suppress(OSError):
                    cpu_limit = parse_v1_quota(
                        _text(f"{cpu_dir}/cpu.cfs_quota_us"), _text(f"{cpu_dir}/cpu.cfs_period_us")
                    )
            return parse_memory_limit(_text(f"{mem}/memory.limit_in_bytes")), cpu_limit

        read = written = None
        blkio = dirs.get("blkio")
        if blkio is not None:
            for name in (
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
                "blkio.io_service_bytes_recursive",
            ):
                with contextlib.suppress(OSError):
                    read, written = parse_blkio(_text(f"{blkio}/{name}"))
                    break
        rx, tx = self._net(f"{mem}/cgroup.procs")
        memory_limit, cpu_limit = self._limits_of(cid, limits)
        return Counters(
            at=at,
            cpu_ns=cpu_ns,
            memory_bytes=working_set(usage, stat, v2=False),
            memory_limit=memory_limit,
            cpu_limit=cpu_limit,
            rx_bytes=rx,
            tx_bytes=tx,
            read_bytes=read,
            write_bytes=written,
            source="cgroup v1",
        )

    def _net(self, procs: str) -> tuple[int | None, int | None]:
        try:
            with open(procs) as f:
                first = f.readline().strip()
            if not first:
                return None, None
            return parse_net_dev(_text(f"{self.proc}/{first}/net/dev"))
        except (OSError, ValueError):
            return None, None


def _text(path: str) -> str:
    with open(path) as f:
        return f.read()


def counters_from_docker_stats(stats: Mapping[str, Any], at: float) -> Counters | None:
    """Docker's ``GET /containers/{id}/stats`` (either cgroup version) → counters."""
    try:
        cpu_ns = int(stats["cpu_stats"]["cpu_usage"]["total_usage"])
    except (KeyError, TypeError, ValueError):
        return None
    mem = stats.get("memory_stats") or {}
    stat = {k: int(v) for k, v in (mem.get("stats") or {}).items() if isinstance(v, int)}
    usage = int(mem.get("usage") or 0)
    v2 = "inactive_file" in stat
    limit = mem.get("limit")
    rx = tx = None
    networks = stats.get("networks")
    if isinstance(networks, Mapping):
        rx = sum(int(n.get("rx_bytes", 0)) for n in networks.values())
        tx = sum(int(n.get("tx_bytes", 0)) for n in networks.values())
    read = written = None
    io = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    if isinstance(io, list):
        read = sum(int(e.get("value", 0)) for e in io if str(e.get("op", "")).lower() == "read")
        written = sum(int(e.get("value", 0)) for e in io if str(e.get("op", "")).lower() == "write")
    return Counters(
        at=at,
        cpu_ns=cpu_ns,
        memory_bytes=working_set(usage, stat, v2=v2),
        memory_limit=int(limit) if isinstance(limit, int) and 0 < limit < _UNLIMITED else None,
        cpu_limit=None,
        rx_bytes=rx,
        tx_bytes=tx,
        read_bytes=read,
        write_bytes=written,
        source="docker",
    )


# --- rates ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceSample:
    """One instance's rates over the last interval, and its running totals."""

    deployment_id: str
    deployment: str
    instance: str  # "web-0"
    container_id: str
    at: float  # wall clock (unix seconds) of the tick
    cpu_cores: float  # cores used on average over the interval
    cpu_allocation: float  # cores the instance may use
    memory_bytes: int
    memory_limit: int | None
    rx_bps: float | None
    tx_bps: float | None
    read_bps: float | None
    write_bps: float | None
    totals: Counters
    source: str

    @property
    def cpu_fraction(self) -> float:
        """CPU usage as a fraction of the allocation (1.0 = all of it)."""
        return self.cpu_cores / self.cpu_allocation if self.cpu_allocation > 0 else 0.0


def rates(
    prev: Counters, cur: Counters, allocation_fallback: float
) -> tuple[float, float, float | None, float | None, float | None, float | None] | None:
    """(cpu cores, allocation, rx/s, tx/s, read/s, write/s) between two readings."""
    dt = cur.at - prev.at
    if dt <= 0 or cur.cpu_ns < prev.cpu_ns:
        return None  # counters reset (container restarted) or clock oddity

    def per_s(a: int | None, b: int | None) -> float | None:
        if a is None or b is None or b < a:
            return None
        return (b - a) / dt

    cores = (cur.cpu_ns - prev.cpu_ns) / 1e9 / dt
    allocation = cur.cpu_limit if cur.cpu_limit else allocation_fallback
    return (
        cores,
        allocation,
        per_s(prev.rx_bytes, cur.rx_bytes),
        per_s(prev.tx_bytes, cur.tx_bytes),
        per_s(prev.read_bytes, cur.read_bytes),
        per_s(prev.write_bytes, cur.write_bytes),
    )
