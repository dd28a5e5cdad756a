"""Scoped API tokens and the audit log, in the daemon's store (tables of migration 7).

Composed over :class:`patrd.state.store.Store` (its connection, lock and
transactions); this module only adds the two tables' queries. A token row
holds the SHA-256 of the token, never the token. The audit log keeps at most
``AUDIT_MAX_ROWS`` rows and nothing older than ``AUDIT_MAX_AGE_S``; the
trim runs every ``AUDIT_TRIM_EVERY`` appends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from patrd.model.errors import Conflict, NotFound
from patrd.model.scopes import Scope
from patrd.state.store import Store

AUDIT_MAX_ROWS: Final = 100_000
AUDIT_MAX_AGE_S: Final = 90 * 86400.0
AUDIT_TRIM_EVERY: Final = 256
LAST_USED_RESOLUTION_S: Final = 60.0  # last_used is written at most once a minute


@dataclass(frozen=True, slots=True)
class TokenRecord:
    name: str
    digest: str
    scope: Scope
    deployments: frozenset[str] | None  # None: every deployment
    created_at: float
    expires_at: float | None
    last_used_at: float | None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One entry to append."""

    at: float
    who: str
    method: str
    path: str
    deployment: str | None
    status: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: float
    who: str
    method: str
    path: str
    deployment: str | None
    status: int
    detail: str


_SELECT_TOKENS = (
    "SELECT name, digest, scope, deployments, created_at, expires_at, last_used_at FROM api_tokens"
)


class AccessStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # --- tokens -----------------------------------------------------------------

    async def create_token(
        self,
        name: str,
        digest: str,
        scope: Scope,
        deployments: frozenset[str] | None,
        expires_at: float | None,
        now: float | None = None,
    ) -> TokenRecord:
        record = TokenRecord(
            name=name,
            digest=digest,
            scope=scope,
            deployments=deployments,
            created_at=time.time() if now is None else now,
            expires_at=expires_at,
            last_used_at=None,
        )
        async with self._store._tx() as db:
            async with db.execute("SELECT 1 FROM api_tokens WHERE name = ?", (name,)) as cur:
                if await cur.fetchone() is not None:
                    raise Conflict(f"a token named {name!r} exists; revoke it first")
            await db.execute(
                "INSERT INTO api_tokens (name, digest, scope, deployments, created_at, expires_at, "
                "last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    digest,
                    scope.label,
                    None if deployments is None else json.dumps(sorted(deployments)),
                    record.created_at,
                    expires_at,
                    None,
                ),
            )
        return record

    async def list_tokens(self) -> list[TokenRecord]:
        rows = await self._store._all(_SELECT_TOKENS + " ORDER BY name")
        return [_token(r) for r in rows]

    async def token_by_digest(self, digest: str) -> TokenRecord | None:
        row = await self._store._one(_SELECT_TOKENS + " WHERE digest = ?", (digest,))
        return None if row is None else _token(row)

    async def revoke_token(self, name: str) -> TokenRecord:
        async with self._store._tx() as db:
            async with db.execute(_SELECT_TOKENS + " WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no token named {name!r}")
            await db.execute("DELETE FROM api_tokens WHERE name = ?", (name,))
        return _token(row)

    async def touch_token(self, record: TokenRecord, now: float) -> None:
        """Record a use; skipped when the stored time is less than a minute old."""
        if record.last_used_at is not None and now - record.last_used_at < LAST_USED_RESOLUTION_S:
            return
        async with self._store._tx() as db:
            await db.execute(
                "UPDATE api_tokens SET last_used_at = ? WHERE name = ?", (now, record.name)
            )

    # --- the audit log ------------------------------------------------------------

    async def append_audit(
        self,
        who: str,
        method: str,
        path: str,
        deployment: str | None,
        status: int,
        detail: str = "",
        now: float | None = None,
    ) -> None:
        at = time.time() if now is None else now
        await self.append_audit_rows([AuditRow(at, who, method, path, deployment, status, detail)])

    async def append_audit_rows(self, rows: Sequence[AuditRow]) -> None:
        """Append ``rows`` in one transaction (one fsync however many)."""
        if not rows:
            return
        async with self._store._tx() as db:
            first = last = 0
            for row in rows:
                cur = await db.execute(
                    "INSERT INTO audit (at, who, method, path, deployment, status, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row.at, row.who, row.method, row.path, row.deployment, row.status, row.detail),
                )
                last = int(cur.lastrowid or 0)
                first = first or last
            if last // AUDIT_TRIM_EVERY != (first - 1) // AUDIT_TRIM_EVERY:  # crossed a multiple
                await db.execute(
                    "DELETE FROM audit WHERE id <= ? OR at < ?",
                    (last - AUDIT_MAX_ROWS, rows[-1].at - AUDIT_MAX_AGE_S),
                )

    async def list_audit(
        self,
        *,
        since: float | None = None,
        who: str | None = None,
        deployment: str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The newest ``limit`` matching entries, oldest first (by time: refusals are
        written in batches, so ids are not in time order)."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if who is not None:
            where.append("who = ?")
            params.append(who)
        if deployment is not None:
            where.append("deployment = ?")
            params.append(deployment)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._store._all(
            "SELECT id, at, who, method, path, deployment, status, detail FROM audit "  # noqa: S608
            f"{clause} ORDER BY at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_audit(r) for r in reversed(rows)]


def _token(row: Sequence[Any]) -> TokenRecord:
    deployments = None if row[3] is None else frozenset(json.loads(row[3]))
    return TokenRecord(
        name=row[0],
        digest=row[1],
        scope=Scope.parse(row[2]),
        deployments=deployments,
        created_at=row[4],
        expires_at=row[5],
        last_used_at=row[6],
    )


def _audit(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at=row[1],
        who=row[2],
        method=row[3],
        path=row[4],
        deployment=row[5],
        status=row[6],
        detail=row[7],
    )
