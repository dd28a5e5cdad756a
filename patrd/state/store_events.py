"""The Store's events: what happened to each deployment and to the node, and notify targets."""

from __future__ import annotations

import json
import time
from typing import Any

from patrd.model.errors import Conflict, NotFound
from patrd.model.records import EventRecord, NodeEventRecord
from patrd.state.store_base import StoreBase
from patrd.state.store_rows import EVENTS_KEPT_PER_DEPLOYMENT, insert_event

NODE_EVENTS_KEPT = 1000


class EventsPart(StoreBase):
    """Deployment events, the node's own events and runtime notification targets."""

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
            await insert_event(db, deployment_id, kind, message, revision, time.time())

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
