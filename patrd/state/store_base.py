"""The Store's connection: open (and migrate), the lock, reads and transactions.

Every part of the Store (store_deployments.py, store_releases.py, store_events.py,
store_secrets.py, store_jobs.py, store_urls.py) subclasses :class:`StoreBase`; this
is the only place that turns sqlite errors into ``StoreError``. The deployment
read every write answers with (``get_by_id``) lives here, as every part needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import NotFound, StoreError
from patrd.model.releases import KEEP_RELEASES_DEFAULT, KEEP_REVISIONS_DEFAULT
from patrd.state.database import PRAGMAS, pre_migration_path, snapshot_database
from patrd.state.migrations import MIGRATIONS
from patrd.state.store_rows import SELECT_DEPLOYMENT, deployment_of


class StoreBase:
    """One connection; aiosqlite serialises calls on its own thread."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection: transactions and reads must not interleave on it.
        self._lock = asyncio.Lock()
        # Set by open() when it migrated: (from version, copy taken before migrating).
        self.migrated_from: tuple[int, Path] | None = None
        # Revision retention (history.keep_revisions, images.keep_releases); the daemon sets them.
        self.keep_revisions = KEEP_REVISIONS_DEFAULT
        self.keep_releases = KEEP_RELEASES_DEFAULT

    @classmethod
    async def open(cls, path: Path) -> Self:
        path.parent.mkdir(parents=True, exist_ok=True)
        db: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
            for pragma in PRAGMAS:
                await db.execute(pragma)
            store = cls(db)
            await store._migrate(path)
        except BaseException as exc:
            if db is not None:
                await db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open database {path}: {exc}") from exc
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self, path: Path) -> None:
        current = await self.schema_version()
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database {path} has schema v{current}, newer than this patrd "
                f"(v{len(MIGRATIONS)}): run the newer patrd (migrations are forward-only)"
            )
        if 0 < current < len(MIGRATIONS):
            copy = pre_migration_path(path, current)
            await snapshot_database(path, copy)
            self.migrated_from = (current, copy)
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;"
            )

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a read, under the connection lock; sqlite errors → StoreError."""
        async with self._reading(), self._db.execute(query, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        async with self._reading(), self._db.execute(query, params) as cur:
            return await cur.fetchone()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        async with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StoreError(f"database read failed: {exc}") from exc

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            async with self._tx_unlocked() as db:
                yield db

    @asynccontextmanager
    async def _tx_unlocked(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            await self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"database unavailable: {exc}") from exc
        try:
            yield self._db
        except sqlite3.Error as exc:  # e.g. "database or disk is full" mid-transaction
            await self._rollback()
            raise StoreError(f"database write failed: {exc}") from exc
        except BaseException:
            await self._rollback()
            raise
        try:
            await self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            await self._rollback()
            raise StoreError(f"database write failed: {exc}") from exc

    async def _rollback(self) -> None:
        """SQLite may have rolled back by itself already (SQLITE_FULL, SQLITE_IOERR)."""
        with contextlib.suppress(sqlite3.Error):
            await self._db.execute("ROLLBACK")

    # --- upkeep (patrd/state/upkeep.py runs these) --------------------------------

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL to zero bytes.

        False when a reader kept it from completing (the next run retries).
        """
        try:
            # Under the connection lock: never in the middle of another
            # coroutine's transaction on this connection.
            async with self._lock, self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"WAL checkpoint failed: {exc}") from exc
        return row is not None and int(row[0]) == 0

    async def owner_id(self) -> str:
        """This installation's id, labelled on everything it creates in Docker.

        Two patrd daemons sharing one Docker engine (a second instance, a test)
        then never adopt or collect each other's containers. Kept in the
        database, so a restored backup owns the same containers again.
        """
        async with self._tx() as db:
            async with db.execute("SELECT value FROM meta WHERE key = 'owner_id'") as cur:
                row = await cur.fetchone()
            if row is not None:
                return str(row[0])
            owner = uuid.uuid4().hex[:16]
            await db.execute("INSERT INTO meta VALUES ('owner_id', ?)", (owner,))
        return owner

    async def get_by_id(self, deployment_id: str) -> DeploymentRecord | None:
        row = await self._one(SELECT_DEPLOYMENT + " WHERE d.id = ?", (deployment_id,))
        return deployment_of(row) if row else None

    async def _must_get(self, deployment_id: str) -> DeploymentRecord:
        record = await self.get_by_id(deployment_id)
        if record is None:
            raise NotFound(f"deployment {deployment_id} vanished")
        return record
