"""Database files: connection pragmas, online snapshots, and checks of a file no daemon has open.

Used at open (the copy taken before migrating), by backups and by restore.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from patrd.model.errors import StoreError
from patrd.state.migrations import MIGRATIONS

# Every connection patrd opens (docs/design.md, "Store upkeep"): WAL so readers
# never block the writer; FULL so an acknowledged write survives a power cut,
# not only a crash; a bounded wait for the write lock, then StoreError → 503.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
PRE_MIGRATION_DIR = "pre-migration"


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    schema_version: int
    deployments: int


def pre_migration_path(path: Path, version: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return path.parent / PRE_MIGRATION_DIR / f"{path.stem}-v{version}-{stamp}.db"


async def snapshot_database(source: Path, dest: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API), 0600.

    Runs on its own connection in a thread: the daemon's connection keeps
    serving, and writes made meanwhile are simply not in the copy.
    """
    await asyncio.to_thread(_snapshot, source, dest)


def _snapshot(source: Path, dest: Path) -> None:
    if not source.is_file():
        raise StoreError(f"cannot snapshot {source}: no such database")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # every page in one step: one read transaction, consistent
                dst.execute("PRAGMA journal_mode=DELETE")  # a standalone file, no -wal
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot snapshot {source}: {exc}") from exc


def inspect_database(path: Path) -> DatabaseInfo:
    """Check a database file no daemon has open (restore): intact, and not too new."""
    if not path.is_file():
        raise StoreError(f"{path}: no such database")
    try:
        conn = sqlite3.connect(path)
        try:
            (verdict,) = conn.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise StoreError(f"database {path} is damaged: {verdict}")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"database {path} has schema v{version}, newer than this patrd "
                    f"(v{len(MIGRATIONS)}): use the newer patrd"
                )
            count = conn.execute("SELECT count(*) FROM deployments").fetchone()[0] if version else 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"database {path} is not readable: {exc}") from exc
    return DatabaseInfo(schema_version=version, deployments=int(count))
