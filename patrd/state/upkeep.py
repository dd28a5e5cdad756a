"""Store upkeep: keep the SQLite files from growing without bound.

* **WAL checkpoint.** SQLite checkpoints the WAL by itself every ~1000 pages
  (PASSIVE), but never shrinks the file: one large transaction or a long read
  leaves a big WAL behind for good (the k3s complaint). Every
  ``CHECKPOINT_INTERVAL_S`` patrd runs ``PRAGMA wal_checkpoint(TRUNCATE)``,
  which copies the WAL into the database and truncates it to zero bytes.
* **Retention.** Each deployment keeps its newest ``EVENTS_KEPT_PER_DEPLOYMENT``
  events; inserting trims as it goes, and a sweep here catches the rest.
  Tables added later (metrics, logs) get their sweep here too.

A failure (disk full, database locked) is logged and retried on the next
round; upkeep never stops the daemon.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from patrd.model.errors import StoreError
from patrd.state.store import Store

CHECKPOINT_INTERVAL_S = 300.0
RETENTION_INTERVAL_S = 3600.0

log = structlog.get_logger("patrd.state.upkeep")


@dataclass(frozen=True, slots=True)
class UpkeepOptions:
    database: Path
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    retention_interval_s: float = RETENTION_INTERVAL_S


def wal_bytes(database: Path) -> int:
    try:
        return database.with_name(database.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


async def run(store: Store, options: UpkeepOptions) -> None:
    """Forever: checkpoint every interval, sweep retention less often (first sweep at once)."""
    next_sweep = time.monotonic()
    while True:
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + options.retention_interval_s
            await sweep(store)
        await asyncio.sleep(options.checkpoint_interval_s)
        await checkpoint(store, options.database)


async def checkpoint(store: Store, database: Path) -> bool:
    before = wal_bytes(database)
    try:
        complete = await store.checkpoint()
    except StoreError as exc:
        log.warning("checkpoint_failed", error=str(exc), wal_bytes=before)
        return False
    if not complete:
        log.info("checkpoint_incomplete", wal_bytes=wal_bytes(database), note="retried later")
    elif before:
        log.debug("checkpoint", wal_bytes_before=before)
    return complete


async def sweep(store: Store) -> int:
    try:
        deleted = await store.trim_events()
    except StoreError as exc:
        log.warning("retention_failed", error=str(exc))
        return 0
    if deleted:
        log.info("retention", events_deleted=deleted)
    return deleted
