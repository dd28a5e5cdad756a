"""The Store's managed URLs and certificate state."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite

from patrd.model.deployment import Intent
from patrd.model.errors import Conflict, NotFound, SpecError
from patrd.model.urls import DeploymentTarget, UrlRecord, UrlSpec
from patrd.model.urls import spec_from_json as url_spec_from_json
from patrd.state.store_base import StoreBase
from patrd.state.store_rows import SELECT_DEPLOYMENT, deployment_of


class UrlsPart(StoreBase):
    """Managed URLs and the TLS controller's per-domain bookkeeping."""

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
        async with db.execute(SELECT_DEPLOYMENT + " WHERE d.name = ?", (name,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise SpecError("target.deployment", f"no deployment named {name!r}")
        record = deployment_of(row)
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


_SELECT_URL = "SELECT id, spec, created_at, updated_at FROM urls"


def _url_record(row: Sequence[Any]) -> UrlRecord:
    return UrlRecord(
        id=str(row[0]),
        spec=url_spec_from_json(json.loads(row[1])),
        created_at=float(row[2]),
        updated_at=float(row[3]),
    )


async def refuse_if_urls(db: aiosqlite.Connection, deployment: str) -> None:
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
