"""Metrics history: its own SQLite file, downsampled so its size stays bounded.

``metrics.db`` in the data dir, WAL, ``synchronous=NORMAL``: losing the last
seconds of metrics in a power cut is fine, blocking the desired-state database
is not. Raw samples are kept an hour and rolled up into 1-minute (kept a day),
15-minute (a week) and 1-hour (31 days) buckets (:data:`TIERS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from patrd.model.errors import StoreError
from patrd.observe.counters import InstanceSample

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
            structlog.get_logger("patrd.observe.history").warning(
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
