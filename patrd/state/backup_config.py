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

from patrd.model import checks as c
from patrd.model.errors import ConfigError
from patrd.model.sections import flattened, load_section, setting
from patrd.state.backup_schedule import Schedule, parse_schedule

KEEP_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
BACKUP_DIR = "backup"  # under the data dir: password, status, restic's cache
PASSWORD_NAME = "restic-password"  # noqa: S105 (a file name)


def _keep(value: Any, key: str, _: Path) -> int:
    if not c.is_number(value) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, "must be an integer >= 0 (0: not used)")
    return value


def _stripped(value: Any, key: str, _: Path) -> str:
    return c.str_at(value, key, ConfigError).strip()


def _schedule(value: Any, key: str, _: Path) -> Schedule | None:
    text = c.str_at(value, key, ConfigError).strip()
    if not text:
        return None
    try:
        return parse_schedule(text)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _binary(value: Any, key: str, _: Path) -> str | object:
    return c.str_at(value, key, ConfigError) or c.DEFAULT


@dataclass(frozen=True)
class Retention:
    """``restic forget --keep-*``; all zero: keep everything (no forget)."""

    keep_last: int = setting(0, _keep, "restic forget --keep-last (0: not used)")
    keep_hourly: int = setting(0, _keep, "restic forget --keep-hourly (0: not used)")
    keep_daily: int = setting(0, _keep, "restic forget --keep-daily (0: not used)")
    keep_weekly: int = setting(0, _keep, "restic forget --keep-weekly (0: not used)")
    keep_monthly: int = setting(0, _keep, "restic forget --keep-monthly (0: not used)")
    keep_yearly: int = setting(0, _keep, "restic forget --keep-yearly (0: not used)")

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
    repository: str = setting("", _stripped, 'restic repository; "": off-site backups off')
    schedule: Schedule | None = setting(
        None, _schedule, "when backups run; unset: only on request (patrctl backup run)"
    )
    password_file: Path | None = setting(
        None, c.file_path(), "unset: <data_dir>/backup/restic-password"
    )
    env_file: Path | None = setting(
        None, c.file_path(), "KEY=VALUE lines for restic (backend credentials)"
    )
    state: bool = setting(True, c.boolean(), "patrd's own state (the patrctl backup archive)")
    volumes: bool = setting(True, c.boolean(), "every deployment's volumes")
    hook_timeout_s: float = setting(600.0, c.positive(), "each pre/post hook")
    binary: str = setting("restic", _binary, "the restic program")
    retention: Retention = flattened(Retention)

    @property
    def enabled(self) -> bool:
        return bool(self.repository)

    def validate(self) -> None:
        if self.schedule is not None and not self.repository:
            raise ConfigError("backup.repository", "is required when backup.schedule is set")


def parse_backup(raw: Mapping[str, Any], base_dir: Path) -> BackupConfig:
    return load_section(BackupConfig, raw, "backup", base_dir)


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
