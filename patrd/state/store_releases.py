"""The Store's releases: rollouts, reverts, pushes and the bounded revision history."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import aiosqlite

from patrd.model.deployment import DeploymentRecord, Intent, RevisionRecord, Status
from patrd.model.releases import (
    Origin,
    Pin,
    PruneRow,
    ReleaseRow,
    release_changed,
    resolve_revert,
    revisions_to_prune,
)
from patrd.model.spec import DeploymentSpec
from patrd.state.store_base import StoreBase
from patrd.state.store_rows import (
    SELECT_DEPLOYMENT,
    deployment_of,
    insert_event,
    live_deployment,
    pin_of,
    revision_of,
)


class ReleasesPart(StoreBase):
    """Rollouts, reverts, pushes and redeploys; the revision history; images patrd pulled."""

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
            await insert_event(
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
            await insert_event(
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
            current = await live_deployment(db, name)
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
            current = await live_deployment(db, name)
            pinned, image_id, digest_ref = await pin_of(db, current.id, current.revision)
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
        await move_to_revision(db, current, revision, now, self.keep_revisions, self.keep_releases)
        verb = "reverts to" if origin is Origin.REVERT else "pins"
        await insert_event(
            db,
            current.id,
            origin.value,
            f"revision {revision} {verb} {pin.short}",
            revision,
            now,
        )
        async with db.execute(SELECT_DEPLOYMENT + " WHERE d.id = ?", (current.id,)) as cur:
            row = await cur.fetchone()
        assert row is not None  # inside the transaction that wrote it
        return deployment_of(row)

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
            return await pin_of(self._db, deployment_id, revision)

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
        return [revision_of(r) for r in rows]

    async def get_revision(self, deployment_id: str, revision: int) -> RevisionRecord | None:
        row = await self._one(
            "SELECT revision, spec, state, reason, image_id, pinned_image, created_at, "
            "deployed_at, origin, digest_ref FROM revisions WHERE deployment_id = ? "
            "AND revision = ?",
            (deployment_id, revision),
        )
        return None if row is None else revision_of(row)

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
            query = SELECT_DEPLOYMENT.replace(
                "FROM deployments d", ", d.pushed_at FROM deployments d", 1
            )
            async with db.execute(query) as cur:
                rows = await cur.fetchall()
            for row in rows:
                record, pushed_at = deployment_of(row), row[-1]
                spec = record.spec
                if not spec.deploy_on_push or not matches(spec):
                    continue
                if record.intent is Intent.DELETE:
                    continue
                _, _, running_ref = await pin_of(db, record.id, record.revision)
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
                await prune_revisions(db, record.id, self.keep_revisions, self.keep_releases)
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
                await insert_event(
                    db,
                    record.id,
                    origin.value,
                    f"{verb} {image_ref}: revision {revision}{note}",
                    revision,
                    now,
                )
                changed.append(record.id)
        return [r for r in [await self.get_by_id(i) for i in changed] if r is not None]


async def move_to_revision(
    db: aiosqlite.Connection,
    current: DeploymentRecord,
    revision: int,
    now: float,
    keep_revisions: int,
    keep_releases: int,
) -> None:
    """The deployment now targets ``revision`` (just written): history pruned, and
    a running deployment shows ``deploying`` until the executor rolls it out."""
    await prune_revisions(db, current.id, keep_revisions, keep_releases)
    status = Status.DEPLOYING if current.intent is Intent.RUN else current.status
    await db.execute(
        "UPDATE deployments SET revision = ?, status = ?, updated_at = ? WHERE id = ?",
        (revision, status.value, now, current.id),
    )


async def prune_revisions(
    db: aiosqlite.Connection, deployment_id: str, keep_revisions: int, keep_releases: int
) -> None:
    """Bounded history: ``keep_revisions`` revisions plus the last ``keep_releases``
    releases; the current and stable revisions always stay."""
    async with db.execute(
        "SELECT r.revision, r.origin, d.revision, d.stable_revision FROM revisions r "
        "JOIN deployments d ON d.id = r.deployment_id WHERE r.deployment_id = ?",
        (deployment_id,),
    ) as cur:
        rows = list(await cur.fetchall())
    if len(rows) <= keep_revisions:
        return
    protected = {int(rows[0][2])} | ({int(rows[0][3])} if rows[0][3] is not None else set())
    # The revision being inserted is newer than d.revision: keep the newest too.
    protected.add(max(int(r[0]) for r in rows))
    doomed = revisions_to_prune(
        [PruneRow(int(r[0]), r[1] != Origin.SETTINGS.value) for r in rows],
        keep_revisions=keep_revisions,
        keep_releases=keep_releases,
        protected=protected,
    )
    await db.executemany(
        "DELETE FROM revisions WHERE deployment_id = ? AND revision = ?",
        [(deployment_id, n) for n in doomed],
    )
