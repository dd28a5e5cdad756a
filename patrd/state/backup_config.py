"""``[backup]``: off-site backups to a restic repository (patrd/state/offsite.py).

Kept apart from ``patrd/settings/config.py``, which calls :func:`parse_backup` once.
Secrets never live here in the clear: the repository password is a file
(generated under the data dir on first use unless ``password_file`` names
one) and the backend's credentials (``AWS_ACCESS_KEY_ID``, ``B2_ACCOUNT_KEY``,
...) come from ``env_file`` or the daemon's own environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.model.errors import ConfigError
from patrd.state.backup_schedule import Schedule, parse_schedule

KEEP_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
KEYS = {
    "repository",
    "schedule",
    "password_file",
    "env_file",
    "state",
    "volumes",
    "hook_timeout_s",
    "binary",
    *KEEP_KEYS,
}
BACKUP_DIR = "backup"  # under the data dir: password, status, restic's cache
PASSWORD_NAME = "restic-password"  # noqa: S105 (a file name)


@dataclass(frozen=True)
class Retention:
    """``restic forget --keep-*``; all zero: keep everything (no forget)."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    @property
    def any(self) -> bool:
        return any(getattr(self, k) for k in KEEP_KEYS)

    def flags(self) -> list[str]:
        flags: list[str] = []
        for key in KEEP_KEYS:
            value = getattr(self, key)
            if value:
                flags += [f"--{key.replace('_', '-')}", str(value)]
        return flags


@dataclass(frozen=True)
class BackupConfig:
    repository: str = ""  # "": off-site backups off
    schedule: Schedule | None = None  # None: only on request (patrctl backup run)
    password_file: Path | None = None  # None: <data_dir>/backup/restic-password
    env_file: Path | None = None  # KEY=VALUE lines for restic (backend credentials)
    state: bool = True  # patrd's own state (the patrctl backup archive)
    volumes: bool = True  # every deployment's volumes
    hook_timeout_s: float = 600.0  # each pre/post hook
    binary: str = "restic"
    retention: Retention = Retention()

    @property
    def enabled(self) -> bool:
        return bool(self.repository)


def parse_backup(raw: Mapping[str, Any], base_dir: Path) -> BackupConfig:
    table = raw.get("backup", {})
    if not isinstance(table, Mapping):
        raise ConfigError("backup", "must be a table")
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"backup.{key}", f"unknown key; known: {', '.join(sorted(KEYS))}")
    repository = _str(table, "repository", "").strip()
    schedule_text = _str(table, "schedule", "").strip()
    schedule = None
    if schedule_text:
        try:
            schedule = parse_schedule(schedule_text)
        except ValueError as exc:
            raise ConfigError("backup.schedule", str(exc)) from None
        if not repository:
            raise ConfigError("backup.repository", "is required when backup.schedule is set")
    keep = {}
    for key in KEEP_KEYS:
        value = table.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"backup.{key}", "must be an integer >= 0 (0: not used)")
        keep[key] = value
    timeout = table.get("hook_timeout_s", BackupConfig.hook_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError("backup.hook_timeout_s", "must be a positive number")
    return BackupConfig(
        repository=repository,
        schedule=schedule,
        password_file=_path(table, "password_file", base_dir),
        env_file=_path(table, "env_file", base_dir),
        state=_bool(table, "state", True),
        volumes=_bool(table, "volumes", True),
        hook_timeout_s=float(timeout),
        binary=_str(table, "binary", BackupConfig.binary) or BackupConfig.binary,
        retention=Retention(**keep),
    )


def _str(table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"backup.{key}", "must be a string")
    return value


def _bool(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"backup.{key}", "must be true or false")
    return value


def _path(table: Mapping[str, Any], key: str, base_dir: Path) -> Path | None:
    text = _str(table, key, "")
    if not text:
        return None
    path = Path(text)
    return path if path.is_absolute() else (base_dir / path).resolve()


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes); the values are secrets."""
    env: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("backup.env_file", f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError("backup.env_file", f"{path} line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
