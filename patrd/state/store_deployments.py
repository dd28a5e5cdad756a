"""The Store's deployments: each accepted spec change is a new numbered revision."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.errors import Conflict, NotFound
from patrd.model.releases import Origin, same_source
from patrd.model.spec import DeploymentSpec
from patrd.state.store_base import StoreBase
from patrd.state.store_releases import move_to_revision
from patrd.state.store_rows import (
    SELECT_DEPLOYMENT,
    deployment_of,
    insert_event,
    live_deployment,
    pin_of,
)
from patrd.state.store_secrets import check_secrets_exist
from patrd.state.store_urls import refuse_if_urls


class DeploymentsPart(StoreBase):
    """Deployments: create, change the spec (a new revision), intent, status, replicas."""

    async def list_deployments(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[DeploymentRecord]:
        """By name; ``after``/``limit``: one page (keyset on the unique name index)."""
        query, params = SELECT_DEPLOYMENT, list[Any]()
        if after is not None:
            query += " WHERE d.name > ?"
            params.append(after)
        query += " ORDER BY d.name"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        rows = await self._all(query, params)
        return [deployment_of(row) for row in rows]

    async def get_deployment(self, name: str) -> DeploymentRecord:
        row = await self._one(SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,))
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        return deployment_of(row)

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
            await check_secrets_exist(db, spec)
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
            await insert_event(db, dep_id, "created", "deployment created", 1, now)
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
            current = await live_deployment(db, name)
            spec = change(current.spec)
            await check_secrets_exist(db, spec)
            if current.spec == spec:
                return current
            revision = current.revision + 1
            if same_source(current.spec, spec):
                # Settings only: the image the current revision runs goes along.
                pinned, image_id, digest_ref = await pin_of(db, current.id, current.revision)
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
            await move_to_revision(
                db, current, revision, now, self.keep_revisions, self.keep_releases
            )
            await insert_event(db, current.id, "updated", f"revision {revision}", revision, now)
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
            current = await live_deployment(db, name)
            if current.intent is intent:
                return current
            if intent is Intent.DELETE:
                await refuse_if_urls(db, name)
            await db.execute(
                "UPDATE deployments SET intent = ?, status = ?, status_reason = '', "
                "updated_at = ?, delete_volumes = ? WHERE id = ?",
                (intent.value, status.value, now, int(delete_volumes), current.id),
            )
            kind = {Intent.RUN: "start", Intent.STOP: "stop", Intent.DELETE: "delete"}.get(
                intent, "intent"
            )
            await insert_event(db, current.id, kind, f"{kind} requested", None, now)
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
            await insert_event(db, deployment_id, "status", message, int(row[3]), now)
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
            await insert_event(db, deployment_id, "autoscale", message, None, now)
        return True

    async def purge(self, deployment_id: str) -> None:
        """Drop the row (revisions and events cascade) once nothing is left in Docker."""
        async with self._tx() as db:
            await db.execute(
                "DELETE FROM deployments WHERE id = ? AND intent = ?",
                (deployment_id, Intent.DELETE.value),
            )
