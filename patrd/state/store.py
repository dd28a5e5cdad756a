"""Desired state in SQLite (aiosqlite, WAL).

Every user change is one transaction; each accepted spec change is a new
numbered revision. This is the only module that sees sqlite errors: they
leave as ``StoreError`` (or ``NotFound``/``Conflict`` where they mean that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from patrd.model.errors import Conflict, NotFound, SpecError, StoreError
from patrd.model.releases import (
    KEEP_RELEASES_DEFAULT,
    KEEP_REVISIONS_DEFAULT,
    Origin,
    Pin,
    PruneRow,
    ReleaseRow,
    release_changed,
    resolve_revert,
    revisions_to_prune,
    same_source,
)
from patrd.model.spec import DeploymentSpec, SecretRef, spec_from_json
from patrd.model.urls import DeploymentTarget, UrlRecord, UrlSpec
from patrd.model.urls import spec_from_json as url_spec_from_json


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
    stable_revision: int | None = None  # the last revision that finished rolling out
    pinned_image: str | None = None  # the target revision runs exactly this image id
    delete_volumes: bool = False  # chosen at delete: remove the volumes too
    replicas: int | None = (
        None  # set by the autoscaler (patrd/control/autoscale.py); None: scale.min
    )

    @property
    def template(self) -> str:
        return self.spec.instance_template(self.pinned_image)

    @property
    def in_rollout(self) -> bool:
        return self.stable_revision is not None and self.stable_revision != self.revision


class RevisionState(StrEnum):
    PENDING = "pending"  # not rolled out yet
    DEPLOYED = "deployed"  # what the deployment runs now
    SUPERSEDED = "superseded"  # deployed once, replaced since
    FAILED = "failed"  # its rollout failed; the deployment went back


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    revision: int
    spec: DeploymentSpec
    state: RevisionState
    reason: str
    image_id: str | None
    pinned_image: str | None
    created_at: float
    deployed_at: float | None
    origin: str = Origin.CREATE.value  # releases.Origin: how it came by its image
    digest_ref: str | None = None  # repo@sha256:… it runs, when the registry knows it

    @property
    def release(self) -> bool:
        return self.origin != Origin.SETTINGS.value


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """A secret as anyone may see it: never the value."""

    name: str
    version: int
    created_at: float
    updated_at: float
    used_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    deployment_id: str
    at: float
    kind: str
    message: str
    revision: int | None


@dataclass(frozen=True, slots=True)
class JobRunRecord:
    id: int
    deployment_id: str
    job: str
    trigger: str  # schedule | manual
    started_at: float
    ended_at: float | None
    exit_code: int | None
    outcome: str  # running | ok | failed | timeout | interrupted | error
    message: str


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
    # 2: rollouts and image history (issue 3).
    """
    ALTER TABLE deployments ADD COLUMN stable_revision INTEGER;
    ALTER TABLE revisions ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';
    ALTER TABLE revisions ADD COLUMN reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE revisions ADD COLUMN pinned_image TEXT;
    ALTER TABLE revisions ADD COLUMN image_id TEXT;
    ALTER TABLE revisions ADD COLUMN deployed_at REAL;
    """,
    # Managed URLs and certificate bookkeeping (issue 4). The certificates
    # themselves are files (patrd/tls/certstore.py); this row keeps what must
    # survive a restart: failures, backoff and recent orders per name.
    """
    CREATE TABLE urls (
        id TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        path TEXT NOT NULL,
        deployment TEXT,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (domain, path)
    );
    CREATE INDEX urls_by_deployment ON urls (deployment);
    CREATE TABLE certificates (
        domain TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # Secrets, encrypted at rest (AES-256-GCM, patrd/state/crypto.py); volume
    # deletion chosen at delete time (issue 6).
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    ALTER TABLE deployments ADD COLUMN delete_volumes INTEGER NOT NULL DEFAULT 0;
    """,
    # The autoscaler's instance count (issue 7): NULL runs scale.min; it is
    # clamped to [scale.min, scale.max] when read, and is no new revision.
    """
    ALTER TABLE deployments ADD COLUMN replicas INTEGER;
    """,
    # Deploy on push (issue 8): the registry time of the last push applied,
    # so duplicate and out-of-order notifications roll nothing.
    """
    ALTER TABLE deployments ADD COLUMN pushed_at REAL;
    """,
    # Scoped API tokens (only their SHA-256) and the audit log of API calls
    # (patrd/state/tokens.py).
    """
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL,
        deployments TEXT,
        created_at REAL NOT NULL,
        expires_at REAL,
        last_used_at REAL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        deployment TEXT,
        status INTEGER NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_by_at ON audit (at);
    """,
    # Images patrd pulled (pinned releases: patrd/engine/imagegc.py removes only these):
    # the image id, the reference pulled, and the revision it was pulled for.
    """
    CREATE TABLE pulled_images (
        image_id TEXT PRIMARY KEY,
        ref TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        pulled_at REAL NOT NULL
    );
    """,
    # A secret used as registry_auth is bound to that registry when first used
    # so (trust boundaries): its credentials are never sent to another host.
    """
    ALTER TABLE secrets ADD COLUMN registry TEXT;
    """,
    # Notification targets added at run time (patrd/notify/; [[notify]] in the
    # config are not stored) and the node's own events (disk.low,
    # memory.pressure, notify.failed), which belong to no deployment.
    """
    CREATE TABLE notifications (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE node_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    """,
    # Pinned releases: every revision records how it came by its image and
    # the registry digest it runs; settings changes carry both forward.
    """
    ALTER TABLE revisions ADD COLUMN origin TEXT NOT NULL DEFAULT 'create';
    ALTER TABLE revisions ADD COLUMN digest_ref TEXT;
    UPDATE revisions SET origin = 'push', digest_ref = pinned_image
        WHERE pinned_image LIKE '%@sha256:%';
    UPDATE revisions SET origin = 'revert' WHERE pinned_image LIKE 'sha256:%';
    UPDATE revisions SET origin = 'settings' WHERE pinned_image IS NULL AND revision > 1;
    """,
    # Scheduled job runs (patrd/run/jobs.py): one row per run, its output's newest
    # bytes as JSON lines; JOB_RUNS_KEPT per job are kept.
    """
    CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        job TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        exit_code INTEGER,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        log TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX job_runs_by_job ON job_runs (deployment_id, job, id);
    """,
)

JOB_RUNS_KEPT = 50  # per job: older runs (and their logs) are dropped

EVENTS_KEPT_PER_DEPLOYMENT = 1000
NODE_EVENTS_KEPT = 1000


@dataclass(frozen=True, slots=True)
class NodeEventRecord:
    """An event of the node itself (patrd/observe/nodehealth.py, patrd/notify/)."""

    id: int
    at: float
    kind: str
    message: str


# Every connection patrd opens (docs/design.md, "Store upkeep"): WAL so readers
# never block the writer; FULL so an acknowledged write survives a power cut,
# not only a crash; a bounded wait for the write lock, then StoreError → 503.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
PRE_MIGRATION_DIR = "pre-migration"

_SELECT_DEPLOYMENT = """
    SELECT d.id, d.name, d.revision, d.intent, d.status, d.status_reason,
           d.created_at, d.updated_at, r.spec, d.stable_revision, r.pinned_image,
           d.replicas, d.delete_volumes
    FROM deployments d
    JOIN revisions r ON r.deployment_id = d.id AND r.revision = d.revision
"""


class Store:
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
    async def open(cls, path: Path) -> Store:
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

    async def trim_events(self, keep: int = EVENTS_KEPT_PER_DEPLOYMENT) -> int:
        """Keep the newest ``keep`` events of every deployment; the number deleted."""
        async with self._tx() as db:
            cur = await db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() "
                "OVER (PARTITION BY deployment_id ORDER BY id DESC) AS n FROM events) "
                "WHERE n > ?)",
                (keep,),
            )
            deleted = cur.rowcount
        return max(deleted, 0)

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

    async def list_deployments(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[DeploymentRecord]:
        """By name; ``after``/``limit``: one page (keyset on the unique name index)."""
        query, params = _SELECT_DEPLOYMENT, list[Any]()
        if after is not None:
            query += " WHERE d.name > ?"
            params.append(after)
        query += " ORDER BY d.name"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        rows = await self._all(query, params)
        return [_record(row) for row in rows]

    async def get_deployment(self, name: str) -> DeploymentRecord:
        row = await self._one(_SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,))
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        return _record(row)

    async def get_by_id(self, deployment_id: str) -> DeploymentRecord | None:
        row = await self._one(_SELECT_DEPLOYMENT + " WHERE d.id = ?", (deployment_id,))
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
        rows = await self._all(query, (deployment_id, after_id, limit))
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
            await self._check_secrets_exist(db, spec)
            await db.execute(
                "INSERT INTO deployments (id, name, revision, intent, status, status_reason, "
                "created_at, updated_at) VALUES (?, ?, 1, ?, ?, '', ?, ?)",
                (dep_id, spec.name, intent.value, status.value, now, now),
            )
            await db.execute(
                "INSERT INTO revisions (deployment_id, revision, spec, created_at) "
                "VALUES (?, 1, ?, ?)",
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
            await self._check_secrets_exist(db, spec)
            if current.spec == spec:
                return current
            revision = current.revision + 1
            if same_source(current.spec, spec):
                # Settings only: the image the current revision runs goes along.
                pinned, image_id, digest_ref = await _pin_of(db, current.id, current.revision)
                origin = Origin.SETTINGS
            else:
                pinned = image_id = digest_ref = None  # a new tag: resolved afresh
                origin = Origin.CREATE
            await db.execute(
                "INSERT INTO revisions (deployment_id, revision, spec, created_at, "
                "pinned_image, image_id, digest_ref, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    current.id,
                    revision,
                    json.dumps(spec.to_json(), sort_keys=True),
                    now,
                    pinned,
                    image_id,
                    digest_ref,
                    origin.value,
                ),
            )
            await self._prune(db, current.id)
            status = Status.DEPLOYING if current.intent is Intent.RUN else current.status
            await db.execute(
                "UPDATE deployments SET revision = ?, status = ?, updated_at = ? WHERE id = ?",
                (revision, status.value, now, current.id),
            )
            await _insert_event(db, current.id, "updated", f"revision {revision}", revision, now)
        return await self._must_get(current.id)

    async def set_intent(
        self, name: str, intent: Intent, *, delete_volumes: bool = False
    ) -> DeploymentRecord:
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
            if intent is Intent.DELETE:
                await _refuse_if_urls(db, name)
            await db.execute(
                "UPDATE deployments SET intent = ?, status = ?, status_reason = '', "
                "updated_at = ?, delete_volumes = ? WHERE id = ?",
                (intent.value, status.value, now, int(delete_volumes), current.id),
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

    async def set_replicas(self, deployment_id: str, replicas: int | None, message: str) -> bool:
        """The autoscaler's decision and its event, in one transaction; no new revision.

        False (nothing written) when the deployment is gone or being deleted.
        """
        now = time.time()
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE deployments SET replicas = ? WHERE id = ? AND intent != ?",
                (replicas, deployment_id, Intent.DELETE.value),
            )
            if cur.rowcount != 1:
                return False
            await _insert_event(db, deployment_id, "autoscale", message, None, now)
        return True

    async def events_since(self, after_id: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """(event id, deployment name, kind) of every deployment's events after ``after_id``."""
        rows = await self._all(
            "SELECT e.id, d.name, e.kind FROM events e JOIN deployments d "
            "ON d.id = e.deployment_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (after_id, limit),
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def last_event_id(self) -> int:
        row = await self._one("SELECT MAX(id) FROM events")
        return int(row[0]) if row and row[0] is not None else 0

    async def add_event(
        self, deployment_id: str, kind: str, message: str, revision: int | None = None
    ) -> None:
        async with self._tx() as db:
            await _insert_event(db, deployment_id, kind, message, revision, time.time())

    async def events_after(self, after_id: int, limit: int = 500) -> list[tuple[EventRecord, str]]:
        """Every deployment's events after ``after_id`` with the deployment's name, oldest first."""
        rows = await self._all(
            "SELECT e.id, e.deployment_id, e.at, e.kind, e.message, e.revision, d.name "
            "FROM events e JOIN deployments d ON d.id = e.deployment_id "
            "WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (after_id, limit),
        )
        return [(EventRecord(*row[:6]), str(row[6])) for row in rows]

    # --- the node's events and runtime notification targets (patrd/notify/) --

    async def add_node_event(self, kind: str, message: str) -> None:
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT INTO node_events (at, kind, message) VALUES (?, ?, ?)",
                (time.time(), kind, message),
            )
            if cur.lastrowid is not None and cur.lastrowid % 100 == 0:
                await db.execute(
                    "DELETE FROM node_events WHERE id <= ?", (cur.lastrowid - NODE_EVENTS_KEPT,)
                )

    async def node_events(
        self, *, after_id: int | None = None, limit: int = 100
    ) -> list[NodeEventRecord]:
        """Oldest first: with ``after_id`` the next ``limit`` after it (0: from the
        first), without it the newest ``limit``."""
        if after_id is not None:
            query = "SELECT id, at, kind, message FROM node_events WHERE id > ? ORDER BY id LIMIT ?"
        else:
            query = (
                "SELECT * FROM (SELECT id, at, kind, message FROM node_events WHERE id > ? "
                "ORDER BY id DESC LIMIT ?) ORDER BY id"
            )
        rows = await self._all(query, (after_id or 0, limit))
        return [NodeEventRecord(int(r[0]), float(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def last_node_event_id(self) -> int:
        row = await self._one("SELECT MAX(id) FROM node_events")
        return int(row[0]) if row and row[0] is not None else 0

    async def list_notifications(self) -> list[tuple[str, dict[str, Any], float]]:
        """(name, stored JSON, created at) of every runtime notification target."""
        rows = await self._all("SELECT name, spec, created_at FROM notifications ORDER BY name")
        return [(str(r[0]), json.loads(r[1]), float(r[2])) for r in rows]

    async def create_notification(self, name: str, spec: dict[str, Any]) -> float:
        now = time.time()
        async with self._tx() as db:
            async with db.execute("SELECT 1 FROM notifications WHERE name = ?", (name,)) as cur:
                if await cur.fetchone() is not None:
                    raise Conflict(f"notification {name!r} already exists")
            await db.execute(
                "INSERT INTO notifications (name, spec, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(spec, sort_keys=True), now),
            )
        return now

    async def delete_notification(self, name: str) -> None:
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM notifications WHERE name = ?", (name,))
            if cur.rowcount != 1:
                raise NotFound(f"notification {name!r} not found")

    async def complete_rollout(self, deployment_id: str, revision: int, image_id: str) -> bool:
        """The target revision is fully out: it is now what the deployment runs."""
        now = time.time()
        async with self._tx() as db:
            async with db.execute(
                "SELECT revision, stable_revision FROM deployments WHERE id = ?", (deployment_id,)
            ) as cur:
                row = await cur.fetchone()
            if row is None or row[0] != revision or row[1] == revision:
                return False
            await db.execute(
                "UPDATE revisions SET state = 'superseded' "
                "WHERE deployment_id = ? AND state = 'deployed'",
                (deployment_id,),
            )
            await db.execute(
                "UPDATE revisions SET state = 'deployed', image_id = ?, deployed_at = ?, "
                "reason = '' WHERE deployment_id = ? AND revision = ?",
                (image_id, now, deployment_id, revision),
            )
            await db.execute(
                "UPDATE deployments SET stable_revision = ?, updated_at = ? WHERE id = ?",
                (revision, now, deployment_id),
            )
            await _insert_event(
                db,
                deployment_id,
                "rollout",
                f"revision {revision} deployed ({image_id[:19]})",
                revision,
                now,
            )
        return True

    async def fail_rollout(
        self, deployment_id: str, revision: int, reason: str, image_id: str | None
    ) -> bool:
        """The target revision failed: mark it and go back to the stable one."""
        now = time.time()
        async with self._tx() as db:
            async with db.execute(
                "SELECT revision, stable_revision FROM deployments WHERE id = ?", (deployment_id,)
            ) as cur:
                row = await cur.fetchone()
            if row is None or row[0] != revision or row[1] is None or row[1] == revision:
                return False
            await db.execute(
                "UPDATE revisions SET state = 'failed', reason = ?, "
                "image_id = COALESCE(?, image_id) WHERE deployment_id = ? AND revision = ?",
                (reason, image_id, deployment_id, revision),
            )
            await db.execute(
                "UPDATE deployments SET revision = ?, updated_at = ? WHERE id = ?",
                (row[1], now, deployment_id),
            )
            await _insert_event(
                db,
                deployment_id,
                "rollout_failed",
                f"revision {revision} failed: {reason}; back to revision {row[1]}",
                revision,
                now,
            )
        return True

    async def revert(self, name: str, ref: str) -> DeploymentRecord:
        """A new revision: the current spec, running the image of ``ref`` from the history.

        ``ref``: a revision number, a digest or an image id (prefix); see
        :func:`patrd.model.releases.resolve_revert`.
        """
        async with self._tx() as db:
            current = await self._live(db, name)
            async with db.execute(
                "SELECT revision, pinned_image, image_id, digest_ref, origin FROM revisions "
                "WHERE deployment_id = ?",
                (current.id,),
            ) as cur:
                rows = [
                    ReleaseRow(int(r[0]), r[1], r[2], r[3], str(r[4])) for r in await cur.fetchall()
                ]
            row = resolve_revert(ref, rows, name)
            target = row.target
            assert target is not None  # resolve_revert checked
            image_id = row.image_id or (target if "@" not in target else None)
            pin = Pin(ref=target, image_id=image_id, digest=row.digest)
            record = await self._new_release(db, current, pin, Origin.REVERT)
        return record

    async def redeploy(self, name: str, pin: Pin) -> tuple[DeploymentRecord, bool]:
        """The tag was pulled again: a new release when its image changed; (record, changed)."""
        async with self._tx() as db:
            current = await self._live(db, name)
            pinned, image_id, digest_ref = await _pin_of(db, current.id, current.revision)
            if not release_changed(pinned, image_id, digest_ref, pin):
                return current, False
            record = await self._new_release(db, current, pin, Origin.REDEPLOY)
        return record, True

    async def _new_release(
        self, db: aiosqlite.Connection, current: DeploymentRecord, pin: Pin, origin: Origin
    ) -> DeploymentRecord:
        now = time.time()
        revision = current.revision + 1
        digest_ref = pin.ref if pin.digest is not None else None
        await db.execute(
            "INSERT INTO revisions (deployment_id, revision, spec, created_at, pinned_image, "
            "image_id, digest_ref, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                current.id,
                revision,
                json.dumps(current.spec.to_json(), sort_keys=True),
                now,
                pin.ref,
                pin.image_id,
                digest_ref,
                origin.value,
            ),
        )
        await self._prune(db, current.id)
        status = Status.DEPLOYING if current.intent is Intent.RUN else current.status
        await db.execute(
            "UPDATE deployments SET revision = ?, status = ?, updated_at = ? WHERE id = ?",
            (revision, status.value, now, current.id),
        )
        verb = "reverts to" if origin is Origin.REVERT else "pins"
        await _insert_event(
            db,
            current.id,
            origin.value,
            f"revision {revision} {verb} {pin.short}",
            revision,
            now,
        )
        async with db.execute(_SELECT_DEPLOYMENT + " WHERE d.id = ?", (current.id,)) as cur:
            row = await cur.fetchone()
        assert row is not None  # inside the transaction that wrote it
        return _record(row)

    async def record_image(
        self, deployment_id: str, revision: int, image_id: str, digest_ref: str | None
    ) -> None:
        """The controller resolved ``revision``'s image: pin it there, and in the
        settings-only revisions written on top of it meanwhile (they carry it)."""
        async with self._tx() as db:
            async with db.execute(
                "SELECT revision, origin, image_id FROM revisions WHERE deployment_id = ? "
                "AND revision >= ? ORDER BY revision",
                (deployment_id, revision),
            ) as cur:
                rows = await cur.fetchall()
            for number, origin, known in rows:
                if number != revision and origin != Origin.SETTINGS.value:
                    break
                if known is not None:
                    continue
                await db.execute(
                    "UPDATE revisions SET image_id = ?, digest_ref = COALESCE(digest_ref, ?) "
                    "WHERE deployment_id = ? AND revision = ?",
                    (image_id, digest_ref, deployment_id, number),
                )

    async def revision_pin(
        self, deployment_id: str, revision: int
    ) -> tuple[str | None, str | None, str | None]:
        """(pinned_image, image_id, digest_ref) of a revision; all None when unresolved."""
        async with self._reading():
            return await _pin_of(self._db, deployment_id, revision)

    async def _prune(self, db: aiosqlite.Connection, deployment_id: str) -> None:
        """Bounded history: ``keep_revisions`` revisions plus the last ``keep_releases``
        releases; the current and stable revisions always stay."""
        async with db.execute(
            "SELECT r.revision, r.origin, d.revision, d.stable_revision FROM revisions r "
            "JOIN deployments d ON d.id = r.deployment_id WHERE r.deployment_id = ?",
            (deployment_id,),
        ) as cur:
            rows = list(await cur.fetchall())
        if len(rows) <= self.keep_revisions:
            return
        protected = {int(rows[0][2])} | ({int(rows[0][3])} if rows[0][3] is not None else set())
        # The revision being inserted is newer than d.revision: keep the newest too.
        protected.add(max(int(r[0]) for r in rows))
        doomed = revisions_to_prune(
            [PruneRow(int(r[0]), r[1] != Origin.SETTINGS.value) for r in rows],
            keep_revisions=self.keep_revisions,
            keep_releases=self.keep_releases,
            protected=protected,
        )
        await db.executemany(
            "DELETE FROM revisions WHERE deployment_id = ? AND revision = ?",
            [(deployment_id, n) for n in doomed],
        )

    async def history(self, deployment_id: str) -> list[RevisionRecord]:
        """Revisions that were rolled out (or tried to), newest first; plus the
        target revision while it is pending (rolling out, or kept for the next start)."""
        rows = await self._all(
            "SELECT r.revision, r.spec, r.state, r.reason, r.image_id, r.pinned_image, "
            "r.created_at, r.deployed_at, r.origin, r.digest_ref FROM revisions r "
            "JOIN deployments d ON d.id = r.deployment_id WHERE r.deployment_id = ? "
            "AND (r.state != 'pending' OR r.revision = d.revision) ORDER BY r.revision DESC",
            (deployment_id,),
        )
        return [_revision(r) for r in rows]

    async def get_revision(self, deployment_id: str, revision: int) -> RevisionRecord | None:
        row = await self._one(
            "SELECT revision, spec, state, reason, image_id, pinned_image, created_at, "
            "deployed_at, origin, digest_ref FROM revisions WHERE deployment_id = ? "
            "AND revision = ?",
            (deployment_id, revision),
        )
        return None if row is None else _revision(row)

    async def revision_image(self, deployment_id: str, revision: int) -> str | None:
        """The image id a revision ran (for going back to it exactly)."""
        row = await self._one(
            "SELECT COALESCE(pinned_image, image_id) FROM revisions "
            "WHERE deployment_id = ? AND revision = ?",
            (deployment_id, revision),
        )
        return None if row is None or row[0] is None else str(row[0])

    # --- pulled images (patrd/engine/imagegc.py) -------------------------------------

    async def record_pull(self, image_id: str, ref: str, deployment_id: str, revision: int) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO pulled_images (image_id, ref, deployment_id, revision, pulled_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (image_id) DO UPDATE SET ref = excluded.ref, "
                "deployment_id = excluded.deployment_id, revision = excluded.revision, "
                "pulled_at = excluded.pulled_at",
                (image_id, ref, deployment_id, revision, time.time()),
            )

    async def forget_pull(self, image_id: str) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM pulled_images WHERE image_id = ?", (image_id,))

    async def image_gc_rows(
        self,
    ) -> tuple[list[tuple[str, str, str, int, float]], list[tuple[str, int, str, str | None]]]:
        """Pulled images (id, ref, deployment id, revision, pulled_at), and every
        revision's images (deployment id, revision, state, image id, else pin) with
        the deployment's current and stable revisions as states ``current``/``stable``."""
        pulled = await self._all(
            "SELECT image_id, ref, deployment_id, revision, pulled_at FROM pulled_images"
        )
        revisions = await self._all(
            "SELECT r.deployment_id, r.revision, "
            "CASE WHEN r.revision = d.revision THEN 'current' "
            "WHEN r.revision = d.stable_revision THEN 'stable' ELSE r.state END, "
            # The image id first: a pin may be a digest reference (push, redeploy).
            "COALESCE(r.image_id, r.pinned_image) "
            "FROM revisions r JOIN deployments d ON d.id = r.deployment_id"
        )
        return (
            [(str(a), str(b), str(c), int(d), float(e)) for a, b, c, d, e in pulled],
            [(str(a), int(b), str(c), None if d is None else str(d)) for a, b, c, d in revisions],
        )

    # --- secrets (issue 6): only sealed bytes pass through here ---------------

    async def key_check(self) -> tuple[bytes, bytes] | None:
        """The value sealed with the secrets key when it was first used (nonce, ciphertext)."""
        row = await self._one("SELECT value FROM meta WHERE key = 'secrets_key_check'")
        if row is None:
            return None
        nonce, _, ciphertext = str(row[0]).partition(":")
        return bytes.fromhex(nonce), bytes.fromhex(ciphertext)

    async def set_key_check(self, nonce: bytes, ciphertext: bytes) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('secrets_key_check', ?)",
                (f"{nonce.hex()}:{ciphertext.hex()}",),
            )

    async def count_secrets(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM secrets")
        return int(row[0]) if row else 0

    async def list_secrets(self) -> list[SecretRecord]:
        async with self._reading():
            async with self._db.execute(
                "SELECT name, version, created_at, updated_at FROM secrets ORDER BY name"
            ) as cur:
                rows = await cur.fetchall()
            users = await self._secret_users(self._db)
        return [
            SecretRecord(r[0], int(r[1]), float(r[2]), float(r[3]), tuple(users.get(r[0], ())))
            for r in rows
        ]

    async def get_secret(self, name: str) -> SecretRecord:
        for record in await self.list_secrets():
            if record.name == name:
                return record
        raise NotFound(f"secret {name!r} not found")

    async def put_secret(
        self, name: str, nonce: bytes, ciphertext: bytes, *, create: bool
    ) -> SecretRecord:
        """Create (409 if it exists) or replace (404 if it does not) a sealed value."""
        now = time.time()
        async with self._tx() as db:
            async with db.execute("SELECT version FROM secrets WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            if create and row is not None:
                raise Conflict(f"secret {name!r} already exists; PUT replaces its value")
            if not create and row is None:
                raise NotFound(f"secret {name!r} not found")
            if row is None:
                await db.execute(
                    "INSERT INTO secrets (name, nonce, ciphertext, version, created_at, "
                    "updated_at) VALUES (?, ?, ?, 1, ?, ?)",
                    (name, nonce, ciphertext, now, now),
                )
            else:
                await db.execute(
                    "UPDATE secrets SET nonce = ?, ciphertext = ?, version = version + 1, "
                    "updated_at = ? WHERE name = ?",
                    (nonce, ciphertext, now, name),
                )
            users = await self._secret_users(db)
            for dep_id in users.get(name, {}).values():
                verb = "created" if row is None else "changed"
                await _insert_event(db, dep_id, "secret", f"secret {name} {verb}", None, now)
        return await self.get_secret(name)

    async def delete_secret(self, name: str) -> None:
        async with self._tx() as db:
            users = await self._secret_users(db)
            if users.get(name):
                raise Conflict(
                    f"secret {name!r} is used by {', '.join(sorted(users[name]))}; "
                    "remove it from their env first"
                )
            cur = await db.execute("DELETE FROM secrets WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise NotFound(f"secret {name!r} not found")

    async def sealed_secrets(self, names: Iterable[str]) -> dict[str, tuple[bytes, bytes, int]]:
        """name → (nonce, ciphertext, version) of the existing ones among ``names``."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = await self._all(
            f"SELECT name, nonce, ciphertext, version FROM secrets WHERE name IN ({marks})",  # noqa: S608
            wanted,
        )
        return {r[0]: (bytes(r[1]), bytes(r[2]), int(r[3])) for r in rows}

    async def _secret_users(self, db: aiosqlite.Connection) -> dict[str, dict[str, str]]:
        """secret name → {deployment name: id} over the live deployments' current specs."""
        users: dict[str, dict[str, str]] = {}
        async with db.execute(_SELECT_DEPLOYMENT + " WHERE d.intent != 'delete'") as cur:
            for row in await cur.fetchall():
                record = _record(row)
                for secret in record.spec.secret_names:
                    users.setdefault(secret, {})[record.name] = record.id
        return users

    async def _check_secrets_exist(self, db: aiosqlite.Connection, spec: DeploymentSpec) -> None:
        if not spec.secret_names:
            return
        async with db.execute("SELECT name FROM secrets") as cur:
            known = {str(r[0]) for r in await cur.fetchall()}
        for key, value in spec.env:
            if isinstance(value, SecretRef) and value.name not in known:
                raise SpecError(f"env.{key}.secret", f"secret {value.name!r} does not exist")
        auth = spec.registry_auth
        if auth is not None and auth.name not in known:
            raise SpecError("registry_auth.secret", f"secret {auth.name!r} does not exist")
        if auth is not None:
            await self._bind_registry_secret(db, auth.name, spec.registry)

    async def _bind_registry_secret(
        self, db: aiosqlite.Connection, name: str, registry: str
    ) -> None:
        """Bind ``name`` to ``registry`` on its first use as registry_auth; refuse others."""
        await db.execute(
            "UPDATE secrets SET registry = ? WHERE name = ? AND registry IS NULL", (registry, name)
        )
        async with db.execute("SELECT registry FROM secrets WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        bound = str(row[0]) if row and row[0] is not None else registry
        if bound != registry:
            raise SpecError(
                "registry_auth.secret",
                f"secret {name!r} holds credentials for registry {bound!r}; it is never sent "
                f"to {registry!r}: create a separate secret for that registry",
            )

    async def deploy_pushed(
        self,
        matches: Callable[[DeploymentSpec], bool],
        image_ref: str,
        at: float,
        origin: Origin = Origin.PUSH,
    ) -> list[DeploymentRecord]:
        """A new image was pushed: roll every matching deployment with deploy on push to it.

        ``image_ref`` (``host/repo@sha256:…``) is pinned exactly. Idempotent: a
        deployment already on that ref, or that applied a later push, is
        skipped; a deleted one is left alone; one created without deploying
        starts. A stopped one gets the new revision but stays stopped: the
        next start runs the pushed image.
        """
        now = time.time()
        changed: list[str] = []
        async with self._tx() as db:
            query = _SELECT_DEPLOYMENT.replace(
                "FROM deployments d", ", d.pushed_at FROM deployments d", 1
            )
            async with db.execute(query) as cur:
                rows = await cur.fetchall()
            for row in rows:
                record, pushed_at = _record(row), row[-1]
                spec = record.spec
                if not spec.deploy_on_push or not matches(spec):
                    continue
                if record.intent is Intent.DELETE:
                    continue
                _, _, running_ref = await _pin_of(db, record.id, record.revision)
                if image_ref in (record.pinned_image, running_ref) or (
                    pushed_at is not None and at and float(pushed_at) >= at
                ):
                    continue
                revision = record.revision + 1
                await db.execute(
                    "INSERT INTO revisions (deployment_id, revision, spec, created_at, "
                    "pinned_image, digest_ref, origin) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        revision,
                        json.dumps(spec.to_json(), sort_keys=True),
                        now,
                        image_ref,
                        image_ref,
                        origin.value,
                    ),
                )
                await self._prune(db, record.id)
                stopped = record.intent is Intent.STOP
                intent = Intent.STOP if stopped else Intent.RUN
                status = Status.STOPPED if stopped else Status.DEPLOYING
                await db.execute(
                    "UPDATE deployments SET revision = ?, intent = ?, status = ?, "
                    "pushed_at = ?, updated_at = ? WHERE id = ?",
                    (revision, intent.value, status.value, at or now, now, record.id),
                )
                note = " (stopped: used at the next start)" if stopped else ""
                verb = "pushed" if origin is Origin.PUSH else "the tag now points at"
                await _insert_event(
                    db,
                    record.id,
                    origin.value,
                    f"{verb} {image_ref}: revision {revision}{note}",
                    revision,
                    now,
                )
                changed.append(record.id)
        return [r for r in [await self.get_by_id(i) for i in changed] if r is not None]

    async def purge(self, deployment_id: str) -> None:
        """Drop the row (revisions and events cascade) once nothing is left in Docker."""
        async with self._tx() as db:
            await db.execute(
                "DELETE FROM deployments WHERE id = ? AND intent = ?",
                (deployment_id, Intent.DELETE.value),
            )

    # --- scheduled job runs (patrd/run/jobs.py) --------------------------------------

    async def start_job_run(self, deployment_id: str, job: str, trigger: str) -> JobRunRecord:
        now = time.time()
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT INTO job_runs (deployment_id, job, trigger, started_at, outcome) "
                "VALUES (?, ?, ?, ?, 'running')",
                (deployment_id, job, trigger, now),
            )
            run_id = int(cur.lastrowid or 0)
        return JobRunRecord(run_id, deployment_id, job, trigger, now, None, None, "running", "")

    async def finish_job_run(
        self,
        run: JobRunRecord,
        *,
        exit_code: int | None,
        outcome: str,
        message: str,
        log: str,
        event: tuple[str, str],
    ) -> None:
        """Record the end of a run and its event (``job.ok``/``job.failed``) at once;
        the job's oldest runs beyond ``JOB_RUNS_KEPT`` go."""
        now = time.time()
        async with self._tx() as db:
            await db.execute(
                "UPDATE job_runs SET ended_at = ?, exit_code = ?, outcome = ?, message = ?, "
                "log = ? WHERE id = ?",
                (now, exit_code, outcome, message, log, run.id),
            )
            await db.execute(
                "DELETE FROM job_runs WHERE deployment_id = ? AND job = ? AND id NOT IN "
                "(SELECT id FROM job_runs WHERE deployment_id = ? AND job = ? "
                "ORDER BY id DESC LIMIT ?)",
                (run.deployment_id, run.job, run.deployment_id, run.job, JOB_RUNS_KEPT),
            )
            exists = await db.execute_fetchall(
                "SELECT 1 FROM deployments WHERE id = ?", (run.deployment_id,)
            )
            if list(exists):
                await _insert_event(db, run.deployment_id, event[0], event[1], None, now)

    async def running_job_runs(self) -> list[JobRunRecord]:
        """Runs not finished: at start, the ones a previous daemon left."""
        rows = await self._all(
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message FROM job_runs WHERE outcome = 'running' ORDER BY id"
        )
        return [JobRunRecord(*row) for row in rows]

    async def job_runs(
        self, deployment_id: str, job: str | None = None, limit: int = JOB_RUNS_KEPT
    ) -> list[JobRunRecord]:
        """Newest first, without their logs."""
        query = (
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message FROM job_runs WHERE deployment_id = ?"
        )
        params: list[Any] = [deployment_id]
        if job is not None:
            query += " AND job = ?"
            params.append(job)
        rows = await self._all(query + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [JobRunRecord(*row) for row in rows]

    async def last_job_runs(self, deployment_id: str) -> dict[str, JobRunRecord]:
        """The newest run of each job of a deployment."""
        rows = await self._all(
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message FROM job_runs WHERE id IN (SELECT MAX(id) FROM job_runs "
            "WHERE deployment_id = ? GROUP BY job)",
            (deployment_id,),
        )
        return {str(row[2]): JobRunRecord(*row) for row in rows}

    async def job_run_log(self, deployment_id: str, run_id: int) -> tuple[JobRunRecord, str]:
        row = await self._one(
            "SELECT id, deployment_id, job, trigger, started_at, ended_at, exit_code, outcome, "
            "message, log FROM job_runs WHERE deployment_id = ? AND id = ?",
            (deployment_id, run_id),
        )
        if row is None:
            raise NotFound(f"job run {run_id} not found")
        return JobRunRecord(*row[:9]), str(row[9])

    # --- managed URLs and certificate state (issue 4) -------------------------

    async def list_urls(self) -> list[UrlRecord]:
        rows = await self._all(_SELECT_URL + " ORDER BY domain, path")
        return [_url_record(row) for row in rows]

    async def get_url(self, url_id: str) -> UrlRecord:
        row = await self._one(_SELECT_URL + " WHERE id = ?", (url_id,))
        if row is None:
            raise NotFound(f"url {url_id!r} not found")
        return _url_record(row)

    async def create_url(self, spec: UrlSpec) -> UrlRecord:
        """One transaction: the target deployment must exist (and expose the port)."""
        now = time.time()
        url_id = uuid.uuid4().hex[:12]
        async with self._tx() as db:
            await self._check_url(db, spec, None)
            await db.execute(
                "INSERT INTO urls VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    url_id,
                    spec.domain,
                    spec.path,
                    spec.deployment,
                    json.dumps(spec.to_json(), sort_keys=True),
                    now,
                    now,
                ),
            )
        return UrlRecord(url_id, spec, now, now)

    async def update_url(self, url_id: str, change: Callable[[UrlSpec], UrlSpec]) -> UrlRecord:
        now = time.time()
        async with self._tx() as db:
            async with db.execute(_SELECT_URL + " WHERE id = ?", (url_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"url {url_id!r} not found")
            current = _url_record(row)
            spec = change(current.spec)
            if spec == current.spec:
                return current
            await self._check_url(db, spec, url_id)
            await db.execute(
                "UPDATE urls SET domain = ?, path = ?, deployment = ?, spec = ?, updated_at = ? "
                "WHERE id = ?",
                (
                    spec.domain,
                    spec.path,
                    spec.deployment,
                    json.dumps(spec.to_json(), sort_keys=True),
                    now,
                    url_id,
                ),
            )
        return UrlRecord(url_id, spec, current.created_at, now)

    async def delete_url(self, url_id: str) -> UrlRecord:
        async with self._tx() as db:
            async with db.execute(_SELECT_URL + " WHERE id = ?", (url_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"url {url_id!r} not found")
            await db.execute("DELETE FROM urls WHERE id = ?", (url_id,))
        return _url_record(row)

    async def _check_url(self, db: aiosqlite.Connection, spec: UrlSpec, url_id: str | None) -> None:
        async with db.execute(
            "SELECT id FROM urls WHERE domain = ? AND path = ? AND id IS NOT ?",
            (spec.domain, spec.path, url_id),
        ) as cur:
            other = await cur.fetchone()
        if other is not None:
            raise Conflict(f"url {spec.label()} already exists (id {other[0]})")
        target = spec.target
        if not isinstance(target, DeploymentTarget):
            return
        name, port = target.deployment, target.port
        async with db.execute(_SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise SpecError("target.deployment", f"no deployment named {name!r}")
        record = _record(row)
        if record.intent is Intent.DELETE:
            raise Conflict(f"deployment {name!r} is being deleted")
        if port not in record.spec.http_ports:
            exposed = ", ".join(str(p) for p in record.spec.http_ports) or "none"
            raise SpecError(
                "target.port", f"deployment {name!r} does not expose port {port} (it has {exposed})"
            )

    async def cert_states(self) -> dict[str, dict[str, Any]]:
        """Per domain: the TLS controller's persisted bookkeeping (a JSON object)."""
        rows = await self._all("SELECT domain, state FROM certificates")
        return {str(row[0]): json.loads(row[1]) for row in rows}

    async def put_cert_state(self, domain: str, state: dict[str, Any]) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO certificates VALUES (?, ?, ?) ON CONFLICT (domain) DO UPDATE "
                "SET state = excluded.state, updated_at = excluded.updated_at",
                (domain, json.dumps(state, sort_keys=True), time.time()),
            )

    async def delete_cert_state(self, domain: str) -> None:
        """Forget a retired certificate's bookkeeping (its deployment was deleted)."""
        async with self._tx() as db:
            await db.execute("DELETE FROM certificates WHERE domain = ?", (domain,))

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


def _revision(r: Sequence[Any]) -> RevisionRecord:
    return RevisionRecord(
        revision=int(r[0]),
        spec=spec_from_json(json.loads(r[1])),
        state=RevisionState(r[2]),
        reason=r[3],
        image_id=r[4],
        pinned_image=r[5],
        created_at=float(r[6]),
        deployed_at=None if r[7] is None else float(r[7]),
        origin=str(r[8]),
        digest_ref=r[9],
    )


async def _pin_of(
    db: aiosqlite.Connection, deployment_id: str, revision: int
) -> tuple[str | None, str | None, str | None]:
    async with db.execute(
        "SELECT pinned_image, image_id, digest_ref FROM revisions "
        "WHERE deployment_id = ? AND revision = ?",
        (deployment_id, revision),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None, None, None
    return row[0], row[1], row[2]


_SELECT_URL = "SELECT id, spec, created_at, updated_at FROM urls"


def _url_record(row: Sequence[Any]) -> UrlRecord:
    return UrlRecord(
        id=str(row[0]),
        spec=url_spec_from_json(json.loads(row[1])),
        created_at=float(row[2]),
        updated_at=float(row[3]),
    )


async def _refuse_if_urls(db: aiosqlite.Connection, deployment: str) -> None:
    """A deployment that managed URLs point at cannot be deleted (409 naming them)."""
    async with db.execute(
        "SELECT id, domain, path FROM urls WHERE deployment = ? ORDER BY domain, path",
        (deployment,),
    ) as cur:
        rows = await cur.fetchall()
    if rows:
        listed = ", ".join(f"{row[1]}{row[2]} (id {row[0]})" for row in rows)
        raise Conflict(
            f"deployment {deployment!r} is the target of managed URLs: {listed}; "
            "delete or re-point them first"
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
        stable_revision=None if row[9] is None else int(row[9]),
        pinned_image=row[10],
        replicas=None if row[11] is None else int(row[11]),
        delete_volumes=bool(row[12]),
    )


# --- database files (backups, migrations, restore) ------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    schema_version: int
    deployments: int


def pre_migration_path(path: Path, version: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return path.parent / PRE_MIGRATION_DIR / f"{path.stem}-v{version}-{stamp}.db"


async def snapshot_database(source: Path, dest: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API), 0600.

    Runs on its own connection in a thread: the daemon's connection keeps
    serving, and writes made meanwhile are simply not in the copy.
    """
    await asyncio.to_thread(_snapshot, source, dest)


def _snapshot(source: Path, dest: Path) -> None:
    if not source.is_file():
        raise StoreError(f"cannot snapshot {source}: no such database")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # every page in one step: one read transaction, consistent
                dst.execute("PRAGMA journal_mode=DELETE")  # a standalone file, no -wal
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot snapshot {source}: {exc}") from exc


def inspect_database(path: Path) -> DatabaseInfo:
    """Check a database file no daemon has open (restore): intact, and not too new."""
    if not path.is_file():
        raise StoreError(f"{path}: no such database")
    try:
        conn = sqlite3.connect(path)
        try:
            (verdict,) = conn.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise StoreError(f"database {path} is damaged: {verdict}")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"database {path} has schema v{version}, newer than this patrd "
                    f"(v{len(MIGRATIONS)}): use the newer patrd"
                )
            count = conn.execute("SELECT count(*) FROM deployments").fetchone()[0] if version else 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"database {path} is not readable: {exc}") from exc
    return DatabaseInfo(schema_version=version, deployments=int(count))
