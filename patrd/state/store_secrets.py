"""The Store's secrets: sealed values (patrd/state/vault.py opens them), never plain text."""

from __future__ import annotations

import time
from collections.abc import Iterable

import aiosqlite

from patrd.model.errors import Conflict, NotFound, SpecError
from patrd.model.records import SecretRecord
from patrd.model.spec import DeploymentSpec, SecretRef
from patrd.state.store_base import StoreBase
from patrd.state.store_rows import SELECT_DEPLOYMENT, deployment_of, insert_event


class SecretsPart(StoreBase):
    """Secrets: only sealed bytes pass through here."""

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
            users = await secret_users(self._db)
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
            users = await secret_users(db)
            for dep_id in users.get(name, {}).values():
                verb = "created" if row is None else "changed"
                await insert_event(db, dep_id, "secret", f"secret {name} {verb}", None, now)
        return await self.get_secret(name)

    async def delete_secret(self, name: str) -> None:
        async with self._tx() as db:
            users = await secret_users(db)
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


async def secret_users(db: aiosqlite.Connection) -> dict[str, dict[str, str]]:
    """secret name → {deployment name: id} over the live deployments' current specs."""
    users: dict[str, dict[str, str]] = {}
    async with db.execute(SELECT_DEPLOYMENT + " WHERE d.intent != 'delete'") as cur:
        for row in await cur.fetchall():
            record = deployment_of(row)
            for secret in record.spec.secret_names:
                users.setdefault(secret, {})[record.name] = record.id
    return users


async def check_secrets_exist(db: aiosqlite.Connection, spec: DeploymentSpec) -> None:
    """Every secret ``spec`` names exists; its registry_auth secret is bound to its registry."""
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
        await _bind_registry_secret(db, auth.name, spec.registry)


async def _bind_registry_secret(db: aiosqlite.Connection, name: str, registry: str) -> None:
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
