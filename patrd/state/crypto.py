"""Secrets at rest: AES-256-GCM under a key file only root (or the patrd user) reads.

Each value gets a fresh 96-bit nonce and the secret's name as associated
data, so a ciphertext moved to another name does not decrypt. The key file
is created 0600 on first start; a wrong or missing key is a startup error,
never a silent fallback to plaintext or to a new key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from patrd.model.errors import PatrdError

KEY_BYTES = 32
NONCE_BYTES = 12
CHECK_NAME = "\x00patrd-key-check"  # associated data of the key check value
CHECK_PLAINTEXT = b"patrd secrets key check v1"


class SecretsKeyError(PatrdError):
    """The secrets key is missing, unreadable or not the one the database was written with."""


@dataclass(frozen=True, slots=True)
class Sealed:
    nonce: bytes
    ciphertext: bytes


class SecretBox:
    """Encrypts and decrypts secret values; holds the key, never prints it."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretsKeyError(f"secrets key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, name: str, value: bytes) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return Sealed(nonce, self._aead.encrypt(nonce, value, name.encode()))

    def open(self, name: str, sealed: Sealed) -> bytes:
        try:
            return self._aead.decrypt(sealed.nonce, sealed.ciphertext, name.encode())
        except InvalidTag:
            raise SecretsKeyError(
                f"secret {name!r} does not decrypt: wrong secrets key or tampered data"
            ) from None

    def check_value(self) -> Sealed:
        return self.seal(CHECK_NAME, CHECK_PLAINTEXT)

    def verify(self, check: Sealed) -> None:
        """Raise unless ``check`` was sealed with this key."""
        try:
            ok = self._aead.decrypt(check.nonce, check.ciphertext, CHECK_NAME.encode())
        except InvalidTag:
            ok = b""
        if ok != CHECK_PLAINTEXT:
            raise SecretsKeyError(
                "the secrets key does not match this database: restore the key file "
                "that was used to write it (see secrets.key_file)"
            )


def load_or_create_key(path: Path, *, may_create: bool) -> bytes:
    """Read the key; create it (0600, atomically) only when ``may_create``."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not may_create:
            raise SecretsKeyError(
                f"secrets key file {path} is missing but the database holds encrypted "
                "secrets: restore it from your backup"
            ) from None
        return _create_key(path)
    except OSError as exc:
        raise SecretsKeyError(f"cannot read secrets key file {path}: {exc.strerror}") from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SecretsKeyError(f"secrets key file {path} has mode {mode:o}; it must be 0600")
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(
            f"secrets key file {path} must hold {KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def _create_key(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a key another process wrote meanwhile
    except FileExistsError:
        return load_or_create_key(path, may_create=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key
