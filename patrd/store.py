"""Desired state in SQLite (aiosqlite, WAL).

Every user change is one transaction; each accepted spec change is a new
numbered revision. This is the only module that sees sqlite errors: they
leave as ``StoreError`` (or ``NotFound``/``Conflict`` where they mean that).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from patrd.errors import Conflict, NotFound, StoreError
from patrd.spec import DeploymentSpec, spec_from_json


class Intent(StrEnum):
    """What the user wants the deployment to be doing."""

    RUN = "run"
    STOP = "stop"
    CREATED = "created"  # created with deploy_on_create=false, never started
    DELETE = "delete"  # tombstone until the reconciler has removed everything


class Status(StrEnum):
    CREATED = "created"
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    ERRORED = "errored"
    DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    id: str
    name: str
    revision: int
    spec: DeploymentSpec
    intent: Intent
    status: Status
    status_reason: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    deployment_id: str
    at: float
    kind: str
    message: str
    revision: int | None


# Forward-only. Append; never edit a released entry.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL,
        intent TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE revisions (
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        revision INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (deployment_id, revision)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        revision INTEGER
    );
    CREATE INDEX events_by_deployment ON events (deployment_id, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)

EVENTS_KEPT_PER_DEPLOYMENT = 1000

_SELECT_DEPLOYMENT = """
    SELECT d.id, d.name, d.revision, d.intent, d.status, d.status_reason,
           d.created_at, d.updated_at, r.spec
    FROM deployments d
    JOIN revisions r ON r.deployment_id = d.id AND r.revision = d.revision
"""


class Store:
    """One connection; aiosqlite serialises calls on its own thread."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db)
            await store._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        return store

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;"
            )

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            await self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"database unavailable: {exc}") from exc
        try:
            yield self._db
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        try:
            await self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            await self._db.execute("ROLLBACK")
            raise StoreError(f"database write failed: {exc}") from exc

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

    # --- reads ------------------------------------------------------------

    async def list_deployments(self) -> list[DeploymentRecord]:
        async with (
            self._reading(),
            self._db.execute(_SELECT_DEPLOYMENT + " ORDER BY d.name") as cur,
        ):
            rows = await cur.fetchall()
        return [_record(row) for row in rows]

    async def get_deployment(self, name: str) -> DeploymentRecord:
        async with (
            self._reading(),
            self._db.execute(_SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,)) as cur,
        ):
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        return _record(row)

    async def get_by_id(self, deployment_id: str) -> DeploymentRecord | None:
        async with (
            self._reading(),
            self._db.execute(_SELECT_DEPLOYMENT + " WHERE d.id = ?", (deployment_id,)) as cur,
        ):
            row = await cur.fetchone()
        return _record(row) if row else None

    async def list_events(
        self, deployment_id: str, *, after_id: int = 0, limit: int = 100
    ) -> list[EventRecord]:
        """Oldest first. Without ``after_id``: the newest ``limit`` events;
        with it: the ``limit`` events right after it (for pollers, no gaps)."""
        if after_id:
            query = (
                "SELECT id, deployment_id, at, kind, message, revision FROM events "
                "WHERE deployment_id = ? AND id > ? ORDER BY id LIMIT ?"
            )
        else:
            query = (
                "SELECT * FROM (SELECT id, deployment_id, at, kind, message, revision "
                "FROM events WHERE deployment_id = ? AND id > ? ORDER BY id DESC LIMIT ?) "
                "ORDER BY id"
            )
        async with (
            self._reading(),
            self._db.execute(query, (deployment_id, after_id, limit)) as cur,
        ):
            rows = await cur.fetchall()
        return [EventRecord(*row) for row in rows]

    # --- writes -----------------------------------------------------------

    async def create_deployment(self, spec: DeploymentSpec) -> DeploymentRecord:
        now = time.time()
        dep_id = uuid.uuid4().hex
        intent = Intent.RUN if spec.deploy_on_create else Intent.CREATED
        status = Status.DEPLOYING if spec.deploy_on_create else Status.CREATED
        async with self._tx() as db:
            async with db.execute(
                "SELECT intent FROM deployments WHERE name = ?", (spec.name,)
            ) as c:
                existing = await c.fetchone()
            if existing is not None:
                if existing[0] == Intent.DELETE:
                    raise Conflict(f"deployment {spec.name!r} is being deleted; try again shortly")
                raise Conflict(f"deployment {spec.name!r} already exists")
            await db.execute(
                "INSERT INTO deployments VALUES (?, ?, 1, ?, ?, '', ?, ?)",
                (dep_id, spec.name, intent.value, status.value, now, now),
            )
            await db.execute(
                "INSERT INTO revisions VALUES (?, 1, ?, ?)",
                (dep_id, json.dumps(spec.to_json(), sort_keys=True), now),
            )
            await _insert_event(db, dep_id, "created", "deployment created", 1, now)
        return await self._must_get(dep_id)

    async def update_spec(
        self, name: str, change: Callable[[DeploymentSpec], DeploymentSpec]
    ) -> DeploymentRecord:
        """Apply ``change`` to the current spec inside one transaction.

        A new revision when the spec changed, the same record when it did not.
        ``change`` runs under the write lock, so two concurrent updates never
        overwrite each other; if it raises, nothing is written.
        """
        now = time.time()
        async with self._tx() as db:
            current = await self._live(db, name)
            spec = change(current.spec)
            if current.spec == spec:
                return current
            revision = current.revision + 1
            await db.execute(
                "INSERT INTO revisions VALUES (?, ?, ?, ?)",
                (current.id, revision, json.dumps(spec.to_json(), sort_keys=True), now),
            )
            status = Status.DEPLOYING if current.intent is Intent.RUN else current.status
            await db.execute(
                "UPDATE deployments SET revision = ?, status = ?, updated_at = ? WHERE id = ?",
                (revision, status.value, now, current.id),
            )
            await _insert_event(db, current.id, "updated", f"revision {revision}", revision, now)
        return await self._must_get(current.id)

    async def set_intent(self, name: str, intent: Intent) -> DeploymentRecord:
        """Start, stop or delete; no new revision (the spec is unchanged)."""
        now = time.time()
        status = {
            Intent.RUN: Status.DEPLOYING,
            Intent.STOP: Status.STOPPED,
            Intent.DELETE: Status.DELETING,
            Intent.CREATED: Status.CREATED,
        }[intent]
        async with self._tx() as db:
            current = await self._live(db, name)
            if current.intent is intent:
                return current
            await db.execute(
                "UPDATE deployments SET intent = ?, status = ?, status_reason = '', "
                "updated_at = ? WHERE id = ?",
                (intent.value, status.value, now, current.id),
            )
            kind = {Intent.RUN: "start", Intent.STOP: "stop", Intent.DELETE: "delete"}.get(
                intent, "intent"
            )
            await _insert_event(db, current.id, kind, f"{kind} requested", None, now)
        return await self._must_get(current.id)

    async def set_status(self, deployment_id: str, status: Status, reason: str = "") -> bool:
        """Record the reconciler's verdict; True when it changed (and an event was written)."""
        now = time.time()
        async with self._tx() as db:
            async with db.execute(
                "SELECT status, status_reason, intent, revision FROM deployments WHERE id = ?",
                (deployment_id,),
            ) as cur:
                row = await cur.fetchone()
            if row is None or (row[0] == status.value and row[1] == reason):
                return False
            if row[2] == Intent.DELETE and status is not Status.DELETING:
                return False
            await db.execute(
                "UPDATE deployments SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
                (status.value, reason, now, deployment_id),
            )
            message = f"status {status.value}" + (f": {reason}" if reason else "")
            await _insert_event(db, deployment_id, "status", message, int(row[3]), now)
        return True

    async def add_event(
        self, deployment_id: str, kind: str, message: str, revision: int | None = None
    ) -> None:
        async with self._tx() as db:
            await _insert_event(db, deployment_id, kind, message, revision, time.time())

    async def purge(self, deployment_id: str) -> None:
        """Drop the row (revisions and events cascade) once nothing is left in Docker."""
        async with self._tx() as db:
            await db.execute(
                "DELETE FROM deployments WHERE id = ? AND intent = ?",
                (deployment_id, Intent.DELETE.value),
            )

    # --- helpers ----------------------------------------------------------

    async def _live(self, db: aiosqlite.Connection, name: str) -> DeploymentRecord:
        async with db.execute(_SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        record = _record(row)
        if record.intent is Intent.DELETE:
            raise Conflict(f"deployment {name!r} is being deleted")
        return record

    async def _must_get(self, deployment_id: str) -> DeploymentRecord:
        record = await self.get_by_id(deployment_id)
        if record is None:
            raise NotFound(f"deployment {deployment_id} vanished")
        return record


async def _insert_event(
    db: aiosqlite.Connection,
    deployment_id: str,
    kind: str,
    message: str,
    revision: int | None,
    now: float,
) -> None:
    cur = await db.execute(
        "INSERT INTO events (deployment_id, at, kind, message, revision) VALUES (?, ?, ?, ?, ?)",
        (deployment_id, now, kind, message, revision),
    )
    if cur.lastrowid is not None and cur.lastrowid % 100 == 0:
        await db.execute(
            "DELETE FROM events WHERE deployment_id = ? AND id NOT IN "
            "(SELECT id FROM events WHERE deployment_id = ? ORDER BY id DESC LIMIT ?)",
            (deployment_id, deployment_id, EVENTS_KEPT_PER_DEPLOYMENT),
        )


def _record(row: Sequence[Any]) -> DeploymentRecord:
    return DeploymentRecord(
        id=row[0],
        name=row[1],
        revision=int(row[2]),
        intent=Intent(row[3]),
        status=Status(row[4]),
        status_reason=row[5],
        created_at=float(row[6]),
        updated_at=float(row[7]),
        spec=spec_from_json(json.loads(row[8])),
    )
