"""Per-instance resource metrics: cgroup counters → rates → history in SQLite.

Three parts:

* **Readers** (pure parsers plus path lookup): cumulative counters of one
  container straight from its cgroup, v2 (unified) or v1 (per-controller
  hierarchies, this build machine's hybrid layout), cgroupfs or systemd
  driver. Network counters are not in cgroups: they come from
  ``/proc/<pid>/net/dev`` of a process of the container (its network
  namespace), the pid read from the cgroup's ``cgroup.procs``. Where no cgroup
  directory is found the sampler falls back to Docker's stats endpoint
  (``one-shot``), parsed by :func:`counters_from_docker_stats`.
* :class:`Sampler`: every ``metrics.interval_s`` reads every running
  instance's counters (in one worker thread: no file I/O on the loop), turns
  two readings into rates (CPU cores used = Δ cpu time / Δ wall time; CPU
  *usage* = cores used / the cores the instance is allowed, read from the
  cgroup's quota, else the deployment's ``resources.cpu``) and keeps the
  latest per container for the autoscaler, the API and Prometheus.
* :class:`History`: its own SQLite file (``metrics.db`` in the data dir, WAL,
  ``synchronous=NORMAL``: losing the last seconds of metrics in a power cut is
  fine, blocking the desired-state database is not). Raw samples are kept an
  hour and rolled up into 1-minute (kept a day), 15-minute (a week) and
  1-hour (31 days) buckets, so its size is bounded by the instance count.

Memory is the working set, as ``docker stats`` and cAdvisor report it:
usage minus inactive file cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import structlog

from patrd.model.errors import EngineError, StoreError
from patrd.model.instances import ContainerState, Instance
from patrd.model.naming import instance_name

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

    Issue 20: this runs for every instance every ``metrics.interval_s`` and was
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


class StatsEngine(Protocol):
    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]: ...

    async def stats(self, container_id: str) -> dict[str, Any]: ...


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
    ) -> None:
        self._engine = engine
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
        readings = await asyncio.to_thread(self._read_all, ids)
        missing = [cid for cid in ids if readings.get(cid) is None]
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


# --- history ---------------------------------------------------------------------------

# (bucket seconds, kept seconds); bucket 0 = raw samples.
TIERS: tuple[tuple[int, int], ...] = (
    (0, 3600),
    (60, 24 * 3600),
    (900, 7 * 24 * 3600),
    (3600, 31 * 24 * 3600),
)
RANGES: dict[str, tuple[int, int]] = {  # range → (tier, span seconds)
    "hour": (0, 3600),
    "day": (60, 24 * 3600),
    "week": (900, 7 * 24 * 3600),
    "month": (3600, 31 * 24 * 3600),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    tier INTEGER NOT NULL,
    t INTEGER NOT NULL,
    deployment_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    container TEXT NOT NULL,
    n INTEGER NOT NULL,
    cpu REAL NOT NULL,
    cpu_max REAL NOT NULL,
    cpu_limit REAL NOT NULL,
    mem REAL NOT NULL,
    mem_max REAL NOT NULL,
    mem_limit REAL,
    rx REAL,
    tx REAL,
    rd REAL,
    wr REAL,
    PRIMARY KEY (deployment_id, tier, t, container)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups (tier INTEGER PRIMARY KEY, done_until INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Point:
    """One time bucket of a deployment (or one instance): sums over its instances."""

    t: int
    instances: int
    cpu_cores: float
    cpu_allocation: float
    cpu_peak_cores: float
    memory_bytes: float
    memory_peak_bytes: float
    memory_limit_bytes: float | None
    rx_bps: float | None
    tx_bps: float | None
    read_bps: float | None
    write_bps: float | None

    @property
    def cpu_usage(self) -> float:
        return self.cpu_cores / self.cpu_allocation if self.cpu_allocation > 0 else 0.0


class History:
    """Downsampled metrics history in ``metrics.db`` (bounded: see TIERS)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._next_maintenance = 0

    @classmethod
    async def open(cls, path: Path) -> History:
        try:
            return await cls._open(path)
        except sqlite3.DatabaseError as exc:
            # Metrics are not precious: a damaged file is set aside, never fatal.
            broken = path.with_name(f"{path.name}.broken-{int(time.time())}")
            structlog.get_logger("patrd.observe.metrics").warning(
                "metrics_db_reset", error=str(exc), moved_to=str(broken)
            )
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{path}{suffix}", f"{broken}{suffix}")
            try:
                return await cls._open(path)
            except sqlite3.Error as again:
                raise StoreError(f"cannot open metrics database {path}: {again}") from again

    @classmethod
    async def _open(cls, path: Path) -> History:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
                await db.execute(f"PRAGMA {pragma}")
            async with db.execute("PRAGMA quick_check") as cur:
                row = await cur.fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row}")
            await db.executescript(_SCHEMA)
        except BaseException:
            await db.close()
            raise
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        return cls(db, path)

    async def close(self) -> None:
        await self._db.close()

    async def add(self, t: int, samples: Iterable[InstanceSample]) -> None:
        rows = [
            (
                t,
                s.deployment_id,
                s.instance,
                s.container_id[:12],
                s.cpu_cores,
                s.cpu_cores,
                s.cpu_allocation,
                s.memory_bytes,
                s.memory_bytes,
                s.memory_limit,
                s.rx_bps,
                s.tx_bps,
                s.read_bps,
                s.write_bps,
            )
            for s in samples
        ]
        async with self._write():
            await self._db.executemany(
                "INSERT OR REPLACE INTO samples VALUES "
                "(0, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def maintain(self, now: int, known: set[str] | None = None) -> None:
        """Roll up finished buckets and drop what is past its tier's retention (≤ once a minute)."""
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + 60
        await self.rollup(now, known)

    async def rollup(self, now: int, known: set[str] | None = None) -> None:
        async with self._write():
            for (source, _), (tier, _) in itertools.pairwise(TIERS):
                end = now // tier * tier
                async with self._db.execute(
                    "SELECT done_until FROM rollups WHERE tier = ?", (tier,)
                ) as cur:
                    row = await cur.fetchone()
                start = int(row[0]) if row else 0
                if end <= start:
                    continue
                await self._db.execute(
                    "INSERT OR REPLACE INTO samples "
                    "SELECT ?, (t / ?) * ?, deployment_id, MAX(instance), container, SUM(n), "
                    "SUM(cpu * n) / SUM(n), MAX(cpu_max), MAX(cpu_limit), "
                    "SUM(mem * n) / SUM(n), MAX(mem_max), MAX(mem_limit), "
                    "SUM(rx * n) / SUM(n), SUM(tx * n) / SUM(n), "
                    "SUM(rd * n) / SUM(n), SUM(wr * n) / SUM(n) "
                    "FROM samples WHERE tier = ? AND t >= ? AND t < ? "
                    "GROUP BY (t / ?), deployment_id, container",
                    (tier, tier, tier, source, start, end, tier),
                )
                await self._db.execute("INSERT OR REPLACE INTO rollups VALUES (?, ?)", (tier, end))
            for tier, keep in TIERS:
                await self._db.execute(
                    "DELETE FROM samples WHERE tier = ? AND t < ?", (tier, now - keep)
                )
            if known is not None:
                async with self._db.execute("SELECT DISTINCT deployment_id FROM samples") as cur:
                    stored = {str(r[0]) for r in await cur.fetchall()}
                for gone in stored - known:
                    await self._db.execute("DELETE FROM samples WHERE deployment_id = ?", (gone,))

    async def series(
        self, deployment_id: str, range_name: str, now: float, instance: str | None = None
    ) -> tuple[int, list[Point]]:
        """(bucket seconds, points oldest first) of one deployment for ``range_name``."""
        tier, span = RANGES[range_name]
        params = (deployment_id, tier, int(now) - span, instance, instance)
        query = (
            "SELECT t, COUNT(*), SUM(cpu), SUM(cpu_limit), SUM(cpu_max), SUM(mem), SUM(mem_max), "
            "SUM(mem_limit), SUM(rx), SUM(tx), SUM(rd), SUM(wr) FROM samples "
            "WHERE deployment_id = ? AND tier = ? AND t >= ? AND (? IS NULL OR instance = ?) "
            "GROUP BY t ORDER BY t"
        )
        try:
            async with self._lock, self._db.execute(query, params) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"metrics database read failed: {exc}") from exc
        return tier, [
            Point(
                t=int(r[0]),
                instances=int(r[1]),
                cpu_cores=float(r[2]),
                cpu_allocation=float(r[3]),
                cpu_peak_cores=float(r[4]),
                memory_bytes=float(r[5]),
                memory_peak_bytes=float(r[6]),
                memory_limit_bytes=None if r[7] is None else float(r[7]),
                rx_bps=_opt(r[8]),
                tx_bps=_opt(r[9]),
                read_bps=_opt(r[10]),
                write_bps=_opt(r[11]),
            )
            for r in rows
        ]

    async def row_count(self) -> int:
        async with self._lock, self._db.execute("SELECT COUNT(*) FROM samples") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @contextlib.asynccontextmanager
    async def _write(self) -> Any:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"metrics database unavailable: {exc}") from exc
            try:
                yield
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise StoreError(f"metrics database write failed: {exc}") from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise
            try:
                await self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise StoreError(f"metrics database write failed: {exc}") from exc


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
