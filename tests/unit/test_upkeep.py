"""Store upkeep on a real SQLite file: the WAL is truncated, events stay bounded."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from patrd.model import spec
from patrd.state import upkeep
from patrd.state.database import PRAGMAS
from patrd.state.store import Store
from patrd.state.store_rows import EVENTS_KEPT_PER_DEPLOYMENT


async def _deployment(store: Store, name: str) -> str:
    record = await store.create_deployment(
        spec.parse_create({"name": name, "image": "acme/x", "ports": {"80": "http"}}, region="l")
    )
    return record.id


async def test_store_connection_uses_the_documented_pragmas(store: Store, tmp_path: Path) -> None:
    """docs/design.md ("Store upkeep") names these; keep the two in step."""
    assert "PRAGMA synchronous=FULL" in PRAGMAS
    conn = sqlite3.connect(tmp_path / "patrd.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    async with store._db.execute("PRAGMA synchronous") as cur:
        assert await cur.fetchone() == (2,)  # FULL
    async with store._db.execute("PRAGMA busy_timeout") as cur:
        assert await cur.fetchone() == (5000,)


async def test_checkpoint_truncates_the_wal(store: Store, tmp_path: Path) -> None:
    db = tmp_path / "patrd.db"
    dep = await _deployment(store, "web")
    for i in range(300):
        await store.add_event(dep, "note", "x" * 200 + str(i))
    assert upkeep.wal_bytes(db) > 100_000
    assert await upkeep.checkpoint(store, db) is True
    assert upkeep.wal_bytes(db) == 0
    # Nothing was lost on the way.
    assert len(await store.list_events(dep, limit=1000)) == 301


async def test_sweep_keeps_the_newest_events_per_deployment(store: Store) -> None:
    busy, quiet = await _deployment(store, "busy"), await _deployment(store, "quiet")
    for i in range(EVENTS_KEPT_PER_DEPLOYMENT + 250):
        await store.add_event(busy, "note", f"n{i}")
    for i in range(5):
        await store.add_event(quiet, "note", f"q{i}")
    await upkeep.sweep(store)
    kept = await store.list_events(busy, limit=1000)
    assert len(kept) == EVENTS_KEPT_PER_DEPLOYMENT
    assert kept[-1].message == f"n{EVENTS_KEPT_PER_DEPLOYMENT + 249}"
    assert len(await store.list_events(quiet, limit=1000)) == 6  # untouched
    assert await upkeep.sweep(store) == 0


async def test_run_checkpoints_on_its_interval(store: Store, tmp_path: Path) -> None:
    db = tmp_path / "patrd.db"
    dep = await _deployment(store, "web")
    for _ in range(50):
        await store.add_event(dep, "note", "y" * 500)
    assert upkeep.wal_bytes(db) > 0
    options = upkeep.UpkeepOptions(database=db, checkpoint_interval_s=0.05)
    task = asyncio.create_task(upkeep.run(store, options))
    try:
        for _ in range(100):
            if upkeep.wal_bytes(db) == 0:
                break
            await asyncio.sleep(0.02)
        assert upkeep.wal_bytes(db) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
