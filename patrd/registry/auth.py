"""The node registry's credential: generated once, kept 0600 in the data dir.

With ``[registry] enabled`` and no ``htpasswd_file``, patrd makes one user
(``patrd``) with a random password on first start: the password in
``<data_dir>/registry-password`` and its bcrypt hash (made by apache2-utils'
``htpasswd -B``, the format docker-registry reads) in
``<data_dir>/registry.htpasswd``. patrd pulls ``registry: "local"`` images
with it; ``patrctl registry login-info`` prints the ``docker login`` line that
reads the password file (so only who can read that file can push).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from patrd.model.errors import PatrdError

USERNAME = "patrd"
PASSWORD_FILE = "registry-password"  # noqa: S105 (a file name)
HTPASSWD_FILE = "registry.htpasswd"
BCRYPT_COST = "10"


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, password=<hidden>)"


def password_path(data_dir: Path) -> Path:
    return data_dir / PASSWORD_FILE


def htpasswd_path(data_dir: Path) -> Path:
    return data_dir / HTPASSWD_FILE


def login_line(registry_host: str, data_dir: Path) -> str:
    """The shell line that logs Docker in to the node registry with the generated password."""
    return (
        f"docker login {registry_host} --username {USERNAME} "
        f"--password-stdin < {password_path(data_dir)}"
    )


def ensure_credential(data_dir: Path, htpasswd_binary: str = "htpasswd") -> Credential:
    """The generated credential; made (password file, then htpasswd file) when missing."""
    pw_file, ht_file = password_path(data_dir), htpasswd_path(data_dir)
    try:
        password = pw_file.read_text().strip()
    except FileNotFoundError:
        password = ""
    if not password:
        password = secrets.token_urlsafe(32)
        _write_private(pw_file, password + "\n")
        ht_file.unlink(missing_ok=True)  # a hash of an older password
    if not ht_file.exists():
        _write_private(ht_file, _hash(password, htpasswd_binary))
    return Credential(USERNAME, password)


def _hash(password: str, binary: str) -> str:
    """``htpasswd -niBC 10 patrd``: the password on stdin, never in argv."""
    try:
        out = subprocess.run(
            [binary, "-niBC", BCRYPT_COST, USERNAME],
            input=password,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        raise PatrdError(
            f"registry: {binary} not found (Debian package apache2-utils); it makes the "
            "registry's password file, or set registry.htpasswd_file"
        ) from None
    line = out.stdout.strip()
    if out.returncode != 0 or not line.startswith(f"{USERNAME}:$2"):
        raise PatrdError(f"registry: {binary} failed: {out.stderr.strip()[:200]}")
    return line + "\n"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
