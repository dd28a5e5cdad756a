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
import os
import time
from collections.abc import Iterable, Mapping
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

    This runs for every instance every ``metrics.interval_s`` and was most of an
    idle daemon's CPU, so per container and read it opens only the files whose
    figures move (v2: ``cpu.stat``, ``memory.current``, ``memory.stat``,
    ``io.stat`` and the network counters of a process of the container), each
    with one ``os.open``/``os.read``, and takes the one value it needs out of the
    bytes without a dict. What only changes on ``docker update`` or a restart is
    read again every ``limits_every`` reads (a minute at the default interval,
    :func:`refresh_due`): the limits (memory, CPU quota), the pid whose
    ``/proc/<pid>/net/dev`` gives the network counters (also at once when the
    CPU counter went back, i.e. the container restarted, or that pid is gone),
    and which v1 blkio file exists. A found directory is trusted until a read
    fails. :attr:`files_read` counts the files opened (bench, tests).
    """

    def __init__(
        self,
        root: Path = Path("/sys/fs/cgroup"),
        proc: Path = Path("/proc"),
        limits_every: int = 12,
    ) -> None:
        self.root = root
        self.proc = proc
        self._proc = str(proc)
        self.v2 = (root / "cgroup.controllers").is_file()
        self.limits_every = max(1, limits_every)
        self._known: dict[str, _Known] = {}
        self.files_read = 0

    @property
    def layout(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1"

    def forget(self, keep: Iterable[str]) -> None:
        wanted = keep if isinstance(keep, set | frozenset) else set(keep)
        for cid in [c for c in self._known if c not in wanted]:
            del self._known[cid]

    def dirs(self, container_id: str) -> dict[str, Path] | None:
        """Controller name → directory (v2: one directory under the key "")."""
        known = self._known_of(container_id)
        return None if known is None else {k: Path(v) for k, v in known.dirs.items()}

    def _known_of(self, container_id: str) -> _Known | None:
        known = self._known.get(container_id)
        if known is not None:
            return known  # trusted until a read fails (read() forgets it then)
        found = self._find(container_id)
        if found is None:
            return None
        known = _Known({k: str(v) for k, v in found.items()})
        self._known[container_id] = known
        return known

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
            known = self._known_of(container_id)
            if known is None:
                return None
            try:
                return self._read_v2(known) if self.v2 else self._read_v1(known)
            except (OSError, ValueError):
                self._known.pop(container_id, None)  # removed meanwhile, or moved
        return None

    def _bytes(self, path: str) -> bytes:
        self.files_read += 1
        fd = os.open(path, _O_READ)
        try:
            data = os.read(fd, _CHUNK)
            if len(data) < _CHUNK:
                return data
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def _start(self, known: _Known, cpu_ns: int) -> bool:
        """Count a read; True when this one reads the slow-moving files again."""
        refresh = refresh_due(known.reads, self.limits_every) or cpu_ns < known.cpu_ns
        known.reads = 1 if refresh else known.reads + 1
        known.cpu_ns = cpu_ns
        if refresh:
            known.pid = None
        return refresh

    def _read_v2(self, known: _Known) -> Counters:
        d = known.dirs[""]
        cpu_ns = flat_value(self._bytes(f"{d}/cpu.stat"), b"usage_usec") * 1000
        at = time.monotonic()
        usage = int(self._bytes(f"{d}/memory.current"))
        inactive = flat_value(self._bytes(f"{d}/memory.stat"), b"inactive_file", 0)
        read = written = None
        with contextlib.suppress(OSError):
            read, written = parse_io_stat(self._bytes(f"{d}/io.stat").decode())
        if self._start(known, cpu_ns):
            known.memory_limit = parse_memory_limit(self._bytes(f"{d}/memory.max").decode())
            known.cpu_limit = parse_cpu_max(self._bytes(f"{d}/cpu.max").decode())
        rx, tx = self._net(known, f"{d}/cgroup.procs")
        return Counters(
            at=at,
            cpu_ns=cpu_ns,
            memory_bytes=max(0, usage - inactive),
            memory_limit=known.memory_limit,
            cpu_limit=known.cpu_limit,
            rx_bytes=rx,
            tx_bytes=tx,
            read_bytes=read,
            write_bytes=written,
            source="cgroup v2",
        )

    def _read_v1(self, known: _Known) -> Counters:
        dirs = known.dirs
        cpu_ns = int(self._bytes(f"{dirs['cpuacct']}/cpuacct.usage"))
        at = time.monotonic()
        mem = dirs["memory"]
        usage = int(self._bytes(f"{mem}/memory.usage_in_bytes"))
        inactive = flat_value(self._bytes(f"{mem}/memory.stat"), b"total_inactive_file", 0)
        refresh = self._start(known, cpu_ns)
        if refresh:
            cpu_limit = None
            cpu_dir = dirs.get("cpu")
            if cpu_dir is not None:
                with contextlib.suppress(OSError):
                    cpu_limit = parse_v1_quota(
                        self._bytes(f"{cpu_dir}/cpu.cfs_quota_us").decode(),
                        self._bytes(f"{cpu_dir}/cpu.cfs_period_us").decode(),
                    )
            known.memory_limit = parse_memory_limit(
                self._bytes(f"{mem}/memory.limit_in_bytes").decode()
            )
            known.cpu_limit = cpu_limit
        read = written = None
        blkio = dirs.get("blkio")
        if blkio is not None:
            read, written = self._blkio(known, blkio, refresh)
        rx, tx = self._net(known, f"{mem}/cgroup.procs")
        return Counters(
            at=at,
            cpu_ns=cpu_ns,
            memory_bytes=max(0, usage - inactive),
            memory_limit=known.memory_limit,
            cpu_limit=known.cpu_limit,
            rx_bytes=rx,
            tx_bytes=tx,
            read_bytes=read,
            write_bytes=written,
            source="cgroup v1",
        )

    def _blkio(self, known: _Known, blkio: str, refresh: bool) -> tuple[int | None, int | None]:
        """The first of the blkio files that exists (which one is remembered between refreshes)."""
        if known.blkio is not None:
            with contextlib.suppress(OSError):
                return parse_blkio(self._bytes(f"{blkio}/{known.blkio}").decode())
        elif not refresh and known.blkio_missing:
            return None, None
        known.blkio = None
        for name in _BLKIO_FILES:
            with contextlib.suppress(OSError):
                found = parse_blkio(self._bytes(f"{blkio}/{name}").decode())
                known.blkio = name
                known.blkio_missing = False
                return found
        known.blkio_missing = True
        return None, None

    def _net(self, known: _Known, procs: str) -> tuple[int | None, int | None]:
        for _ in range(2):  # a second time with the pid read afresh
            fresh = known.pid is None
            try:
                if fresh:
                    first = self._bytes(procs).split(b"\n", 1)[0].strip()
                    if not first:
                        return None, None
                    known.pid = first.decode()
                return parse_net_dev(self._bytes(f"{self._proc}/{known.pid}/net/dev").decode())
            except (OSError, ValueError):
                known.pid = None
                if fresh:
                    return None, None
        return None, None


_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 16384
_BLKIO_FILES = (
    "blkio.throttle.io_service_bytes_recursive",
    "blkio.throttle.io_service_bytes",
    "blkio.io_service_bytes_recursive",
)


class _Known:
    """What the reader keeps of one container between reads."""

    __slots__ = (
        "blkio",
        "blkio_missing",
        "cpu_limit",
        "cpu_ns",
        "dirs",
        "memory_limit",
        "pid",
        "reads",
    )

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs  # controller → directory (v2: "" → the one directory)
        self.reads = 0  # reads since the slow-moving files were read
        self.cpu_ns = 0
        self.memory_limit: int | None = None
        self.cpu_limit: float | None = None
        self.pid: str | None = None  # a process of the container (its network namespace)
        self.blkio: str | None = None  # v1: which of _BLKIO_FILES exists
        self.blkio_missing = False


def refresh_due(reads: int, limits_every: int) -> bool:
    """Whether a container's read number ``reads`` (0 = its first) reads the limits again.

    Reads 0, ``limits_every``, 2 * ``limits_every``, …: with the default 12 and a
    5 s interval, once a minute. (A restart, seen as the CPU counter going
    back, also refreshes; the reader handles that.)
    """
    return reads % max(1, limits_every) == 0


def flat_value(data: bytes, key: bytes, default: int | None = None) -> int:
    """The value of ``key`` in ``key value`` lines (``cpu.stat``, ``memory.stat``).

    ``default`` when the key is missing or its value is not a number; a
    missing key without a default is a ValueError.
    """
    needle = key + b" "
    if data.startswith(needle):
        start = len(needle)
    else:
        at = data.find(b"\n" + needle)
        start = at + 1 + len(needle) if at >= 0 else -1
    if start >= 0:
        end = data.find(b"\n", start)
        try:
            return int(data[start:] if end < 0 else data[start:end])
        except ValueError:
            pass
    if default is None:
        raise ValueError(f"no {key.decode()} value")
    return default


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
