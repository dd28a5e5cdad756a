"""SQL the Store's parts share: the deployment row and its record, revision rows,
the event every change writes in its own transaction, and the pin of a revision.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import aiosqlite

from patrd.model.deployment import DeploymentRecord, Intent, RevisionRecord, RevisionState, Status
from patrd.model.errors import Conflict, NotFound
from patrd.model.spec import DeploymentSpec, spec_from_json

EVENTS_KEPT_PER_DEPLOYMENT = 1000
SPECS_CACHED = 2048  # distinct stored spec texts kept parsed

SELECT_DEPLOYMENT = """
    SELECT d.id, d.name, d.revision, d.intent, d.status, d.status_reason,
           d.created_at, d.updated_at, r.spec, d.stable_revision, r.pinned_image,
           d.replicas, d.delete_volumes
    FROM deployments d
    JOIN revisions r ON r.deployment_id = d.id AND r.revision = d.revision
"""


@functools.lru_cache(maxsize=SPECS_CACHED)
def spec_of_text(text: str) -> DeploymentSpec:
    """A stored spec's JSON text, parsed once.

    Every resync, sampling pass, scrape and deployment list reads every
    deployment's row; parsing its spec was most of the cost (0.3 ms each).
    A memo of a pure function: the text is the key and a spec is immutable
    (frozen, tuples), so sharing one object between records is safe.
    """
    return spec_from_json(json.loads(text))


def deployment_of(row: Sequence[Any]) -> DeploymentRecord:
    return DeploymentRecord(
        id=row[0],
        name=row[1],
        revision=int(row[2]),
        intent=Intent(row[3]),
        status=Status(row[4]),
        status_reason=row[5],
        created_at=float(row[6]),
        updated_at=float(row[7]),
        spec=spec_of_text(row[8]),
        stable_revision=None if row[9] is None else int(row[9]),
        pinned_image=row[10],
        replicas=None if row[11] is None else int(row[11]),
        delete_volumes=bool(row[12]),
    )


def revision_of(r: Sequence[Any]) -> RevisionRecord:
    return RevisionRecord(
        revision=int(r[0]),
        spec=spec_of_text(r[1]),
        state=RevisionState(r[2]),
        reason=r[3],
        image_id=r[4],
        pinned_image=r[5],
        created_at=float(r[6]),
        deployed_at=None if r[7] is None else float(r[7]),
        origin=str(r[8]),
        digest_ref=r[9],
    )


async def insert_event(
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


async def pin_of(
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


async def live_deployment(db: aiosqlite.Connection, name: str) -> DeploymentRecord:
    """``name`` inside a transaction: 404 if there is none, 409 while it is being deleted."""
    async with db.execute(SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"deployment {name!r} not found")
    record = deployment_of(row)
    if record.intent is Intent.DELETE:
        raise Conflict(f"deployment {name!r} is being deleted")
    return record
