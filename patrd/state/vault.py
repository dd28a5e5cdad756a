"""Secrets as the rest of patrd sees them: names and versions, values only at container creation.

The store keeps sealed bytes; the key stays here. Values leave this module
only through ``env_values`` (for the engine's container env) and ``reveal``
(a notification target's signing key or SMTP password) and are never
logged, put in events, errors or labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from patrd.model.errors import NotFound, SpecError
from patrd.model.instances import RegistryAuth
from patrd.model.records import SecretRecord
from patrd.model.spec import DeploymentSpec, SecretRef, secret_name
from patrd.state.crypto import Sealed, SecretBox, SecretsKeyError, load_or_create_key
from patrd.state.store import Store

MAX_SECRET_BYTES = 64 * 1024


class Vault:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    @classmethod
    async def open(cls, store: Store, key_file: Path) -> Vault:
        """Load (or, on a database without secrets, create) the key and check it."""
        check = await store.key_check()
        fresh = check is None and await store.count_secrets() == 0
        box = SecretBox(load_or_create_key(key_file, may_create=fresh))
        if check is None:
            sealed = box.check_value()
            await store.set_key_check(sealed.nonce, sealed.ciphertext)
        else:
            box.verify(Sealed(*check))
        return cls(store, box)

    async def create(self, name: str, value: str) -> SecretRecord:
        name = secret_name(name)
        sealed = self._box.seal(name, _value(value))
        return await self._store.put_secret(name, sealed.nonce, sealed.ciphertext, create=True)

    async def update(self, name: str, value: str) -> SecretRecord:
        sealed = self._box.seal(name, _value(value))
        return await self._store.put_secret(name, sealed.nonce, sealed.ciphertext, create=False)

    async def reveal(self, name: str) -> str:
        """One secret's value, for patrd's own use (notification keys); never for the API."""
        sealed = await self._store.sealed_secrets([name])
        if name not in sealed:
            raise NotFound(f"secret {name!r} not found")
        nonce, ciphertext, _ = sealed[name]
        return self._box.open(name, Sealed(nonce, ciphertext)).decode()

    async def versions(self, names: Iterable[str]) -> dict[str, int]:
        sealed = await self._store.sealed_secrets(names)
        return {name: version for name, (_, _, version) in sealed.items()}

    async def registry_auth(self, spec: DeploymentSpec, server: str) -> RegistryAuth | None:
        """Pull credentials from the secret ``registry_auth`` names: ``user:password``."""
        ref = spec.registry_auth
        if ref is None:
            return None
        sealed = await self._store.sealed_secrets([ref.name])
        if ref.name not in sealed:
            raise SecretsKeyError(f"secret {ref.name!r} (registry_auth) no longer exists")
        nonce, ciphertext, _ = sealed[ref.name]
        text = self._box.open(ref.name, Sealed(nonce, ciphertext)).decode()
        username, sep, password = text.partition(":")
        if not sep or not username:
            raise SecretsKeyError(
                f"secret {ref.name!r} (registry_auth) must hold username:password"
            )
        return RegistryAuth(server=server, username=username, password=password)

    async def env_values(self, spec: DeploymentSpec) -> Mapping[str, str]:
        """The env of a container: secret references replaced by their values."""
        sealed = await self._store.sealed_secrets(spec.secret_names)
        env: dict[str, str] = {}
        for key, value in spec.env:
            if isinstance(value, SecretRef):
                if value.name not in sealed:
                    raise SecretsKeyError(f"secret {value.name!r} (env {key}) no longer exists")
                nonce, ciphertext, _ = sealed[value.name]
                env[key] = self._box.open(value.name, Sealed(nonce, ciphertext)).decode()
            else:
                env[key] = value
        return env


def _value(value: object) -> bytes:
    if not isinstance(value, str):
        raise SpecError("value", "must be a string")
    data = value.encode()
    if len(data) > MAX_SECRET_BYTES:
        raise SpecError("value", f"longer than {MAX_SECRET_BYTES // 1024} KiB")
    if "\x00" in value:
        raise SpecError("value", "must not contain NUL characters (it becomes an env var)")
    return data
