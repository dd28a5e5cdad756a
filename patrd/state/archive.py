"""Backups of a data dir as one tar file, and restore onto an empty data dir.

A backup holds everything patrd needs to bring a machine back: the database
(every deployment, revision, event, URL, secret) and every other file under
the data dir (the secrets key, certificates and their keys, ...). **It holds
secrets**: it is written 0600 and every tool that writes one says so.

Layout (format 1)::

    data/patrd.db          the database: an SQLite online-backup snapshot
    data/<path>            every other regular file under the data dir; any
                           other SQLite database there (metrics, ...) is
                           snapshotted the same way, never byte-copied
    patrd-backup.json      the manifest, last: format, patrd version, schema
                           version, deployment count, and per file its path,
                           size, mode and sha256

Not included: SQLite ``-wal``/``-shm``/``-journal`` files (the snapshots
are standalone), ``patrd.lock``, ``pre-migration/`` copies, sockets,
symlinks, and this module's own temporary files.

Each snapshot is consistent (one read transaction over its database) while
the daemon keeps serving; other files are copied as they are at that moment
(patrd writes them atomically, so each is whole).

Restore refuses anything but an empty or missing data dir, checks every
member's path, type, size and hash against the manifest and the database's
integrity, unpacks into a sibling staging directory and renames it into
place: a failed restore leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

from patrd import __version__
from patrd.model.errors import PatrdError
from patrd.state.database import (
    PRE_MIGRATION_DIR,
    DatabaseInfo,
    inspect_database,
    snapshot_database,
)

BACKUP_FORMAT = 1
MANIFEST = "patrd-backup.json"
DATA = "data"
DATABASE = "patrd.db"
KEY_NAME = "secrets.key"
KEY_MEMBER = f"key/{KEY_NAME}"  # the secrets key, wherever the config keeps it
LOCK_FILE = "patrd.lock"
TMP_DIR = ".backup-tmp"
RESTIC_CACHE_DIR = (
    ".restic-cache"  # off-site backups' local cache (patrd/state/offsite.py): not state
)
STALE_TMP_S = 3600.0
CHUNK = 256 * 1024
SECRETS_WARNING = (
    "this backup holds secrets (the secrets key, certificate keys, environment values): "
    "keep it private"
)


class BackupError(PatrdError):
    """A backup could not be written or a restore was refused."""


@dataclass(frozen=True, slots=True)
class BackupFile:
    path: str  # relative to the data dir, POSIX
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    format: int
    patrd_version: str
    schema_version: int
    deployments: int
    created_at: float
    files: tuple[BackupFile, ...]
    secrets_key: BackupFile | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "patrd_version": self.patrd_version,
            "schema_version": self.schema_version,
            "deployments": self.deployments,
            "created_at": self.created_at,
            "warning": SECRETS_WARNING,
            "files": [_file_json(f) for f in self.files],
            "secrets_key": _file_json(self.secrets_key) if self.secrets_key else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        try:
            fmt = int(data["format"])
            if fmt > BACKUP_FORMAT:
                raise BackupError(
                    f"backup format {fmt} is newer than this patrd understands ({BACKUP_FORMAT})"
                )
            return cls(
                format=fmt,
                patrd_version=str(data["patrd_version"]),
                schema_version=int(data["schema_version"]),
                deployments=int(data["deployments"]),
                created_at=float(data["created_at"]),
                files=tuple(_file_from_json(f) for f in data["files"]),
                secrets_key=_file_from_json(key) if (key := data.get("secrets_key")) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"not a patrd backup: bad manifest ({exc!r})") from None


def _file_json(f: BackupFile) -> dict[str, Any]:
    return {"path": f.path, "size": f.size, "mode": f"{f.mode:04o}", "sha256": f.sha256}


def _file_from_json(f: Any) -> BackupFile:
    return BackupFile(
        path=str(f["path"]),
        size=int(f["size"]),
        mode=int(str(f["mode"]), 8),
        sha256=str(f["sha256"]),
    )


@dataclass(frozen=True, slots=True)
class RestoreResult:
    data_dir: Path
    manifest: Manifest
    database: DatabaseInfo
    secrets_key: Path | None  # where the backup's secrets key was written


# --- creating ----------------------------------------------------------------


async def create_backup(
    data_dir: Path, database: Path, secrets_key: Path | None = None
) -> tuple[Path, Manifest]:
    """Write a backup tar (0600) under ``data_dir``; the caller sends and removes it.

    ``secrets_key`` is carried as ``key/secrets.key`` wherever it lives (in the
    data dir by default, or where ``daemon.secrets_key_file`` points).
    """
    tmp_dir = data_dir / TMP_DIR
    await asyncio.to_thread(_prepare_tmp, tmp_dir)
    token = uuid.uuid4().hex
    work = tmp_dir / token
    archive = tmp_dir / f"{token}.tar"
    work.mkdir(mode=0o700)
    try:
        entries = await asyncio.to_thread(collect, data_dir, database.name, secrets_key)
        if not any(e.path == DATABASE for e in entries):
            raise BackupError(f"no database {database} to back up")
        sources: list[_Entry] = []
        for entry in entries:
            if entry.sqlite:  # never a byte copy of a live database: a snapshot
                copy = work / f"{len(sources)}.db"
                await snapshot_database(entry.source, copy)
                entry = _Entry(entry.path, copy, entry.mode, sqlite=True, key=False)
            sources.append(entry)
        main = next(e.source for e in sources if e.path == DATABASE)
        info = await asyncio.to_thread(inspect_database, main)
        manifest = await asyncio.to_thread(_write_archive, sources, archive, info)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    return archive, manifest


def _prepare_tmp(tmp_dir: Path) -> None:
    tmp_dir.mkdir(mode=0o700, exist_ok=True)
    now = time.time()
    for leftover in tmp_dir.iterdir():  # from a daemon killed mid-backup
        try:
            if now - leftover.stat().st_mtime > STALE_TMP_S:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
        except OSError:
            continue


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str  # relative to the data dir, POSIX
    source: Path
    mode: int
    sqlite: bool
    key: bool = False

    @property
    def member(self) -> str:
        return KEY_MEMBER if self.key else f"{DATA}/{self.path}"


def collect(data_dir: Path, database_name: str, secrets_key: Path | None = None) -> list[_Entry]:
    """Every file a backup carries, the main database first.

    SQLite databases (found by their header, so the metrics or any later
    database counts too) are marked for a snapshot; their ``-wal``, ``-shm``
    and ``-journal`` files are left out, as are the lock, sockets, links,
    ``pre-migration/`` and this module's temporary files. The secrets key
    travels apart (``key/secrets.key``), last.
    """
    skip = secrets_key.absolute() if secrets_key is not None else None
    entries: list[_Entry] = []
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        if here == data_dir:
            dirs[:] = [d for d in dirs if d not in (PRE_MIGRATION_DIR, TMP_DIR, RESTIC_CACHE_DIR)]
        dirs.sort()
        present = set(files)
        for name in sorted(files):
            path = here / name
            if here == data_dir and name == LOCK_FILE:
                continue
            if path.absolute() == skip:
                continue
            if any(name == base + sfx for sfx in _SIDE_FILES for base in present):
                continue
            try:
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue  # sockets, fifos, links: not state
                with path.open("rb") as f:
                    sqlite = f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
            except FileNotFoundError:
                continue  # removed while we walked (a renewed certificate's old file)
            rel = path.relative_to(data_dir).as_posix()
            if here == data_dir and name == database_name:
                rel = DATABASE
            entries.append(_Entry(rel, path, st.st_mode & 0o777, sqlite=sqlite))
    entries.sort(key=lambda e: e.path != DATABASE)
    if secrets_key is not None:
        try:
            st = secrets_key.stat()
        except FileNotFoundError:
            return entries
        entries.append(_Entry(KEY_NAME, secrets_key, st.st_mode & 0o777, sqlite=False, key=True))
    return entries


_SIDE_FILES = ("-wal", "-shm", "-journal")
_SQLITE_MAGIC = b"SQLite format 3\0"


def _write_archive(entries: list[_Entry], archive: Path, info: DatabaseInfo) -> Manifest:
    files: list[BackupFile] = []
    key: BackupFile | None = None
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with (
        os.fdopen(fd, "wb") as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            try:
                added = _add_file(tar, entry, entry.mode)
            except FileNotFoundError:
                continue  # removed since it was listed
            if entry.key:
                key = added
            else:
                files.append(added)
        manifest = Manifest(
            format=BACKUP_FORMAT,
            patrd_version=__version__,
            schema_version=info.schema_version,
            deployments=info.deployments,
            created_at=time.time(),
            files=tuple(files),
            secrets_key=key,
        )
        body = (json.dumps(manifest.to_json(), indent=2) + "\n").encode()
        member = tarfile.TarInfo(MANIFEST)
        member.size, member.mode, member.mtime = len(body), 0o600, int(manifest.created_at)
        tar.addfile(member, io.BytesIO(body))
        out.flush()
        os.fsync(out.fileno())
    return manifest


class _Hashing:
    """A reader that hashes what tarfile copies, so each file is read once."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data


def _add_file(tar: tarfile.TarFile, entry: _Entry, mode: int) -> BackupFile:
    with entry.source.open("rb") as raw:
        st = os.fstat(raw.fileno())
        member = tarfile.TarInfo(entry.member)
        member.size, member.mode, member.mtime = st.st_size, mode, int(st.st_mtime)
        reader = _Hashing(raw)
        tar.addfile(member, cast(IO[bytes], reader))
    return BackupFile(path=entry.path, size=st.st_size, mode=mode, sha256=reader.digest.hexdigest())


def read_manifest(archive: Path) -> Manifest:
    """The manifest of a backup file (for ``patrctl backup`` to report what it wrote)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            return _manifest(tar)
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive}: not a readable backup: {exc}") from None


def _manifest(tar: tarfile.TarFile) -> Manifest:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise BackupError(f"not a patrd backup: no {MANIFEST}") from None
    stream = tar.extractfile(member)
    if stream is None:
        raise BackupError(f"not a patrd backup: {MANIFEST} is not a file")
    try:
        return Manifest.from_json(json.loads(stream.read(1024 * 1024)))
    except ValueError as exc:
        raise BackupError(f"not a patrd backup: {MANIFEST}: {exc}") from None


# --- restoring ---------------------------------------------------------------


def restore(archive: Path, data_dir: Path, secrets_key: Path | None = None) -> RestoreResult:
    """Unpack ``archive`` into ``data_dir``, which must be empty or missing. Blocking.

    The backup's secrets key goes to ``secrets_key`` (default
    ``<data_dir>/secrets.key``), which must not exist yet.
    """
    data_dir = data_dir.absolute()
    if data_dir.exists():
        if not data_dir.is_dir():
            raise BackupError(f"{data_dir} exists and is not a directory")
        if any(data_dir.iterdir()):
            raise BackupError(
                f"data dir {data_dir} is not empty: restore only onto an empty data dir "
                "(stop patrd and move the old one away first)"
            )
    key_target = (secrets_key or data_dir / KEY_NAME).absolute()
    key_inside = key_target.is_relative_to(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = data_dir.parent / f".{data_dir.name}.restore-{uuid.uuid4().hex[:8]}"
    staging.mkdir(mode=0o700)
    key_dest: Path | None = None
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                manifest = _manifest(tar)
                if manifest.secrets_key is not None:
                    if key_inside:
                        key_dest = staging / key_target.relative_to(data_dir)
                    elif key_target.exists():
                        raise BackupError(
                            f"secrets key file {key_target} exists: move it away first "
                            "(the restored database needs the key from the backup)"
                        )
                    else:
                        key_target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                        key_dest = key_target.with_name(f".{key_target.name}.restore-tmp")
                        key_dest.unlink(missing_ok=True)
                _unpack(tar, manifest, staging, key_dest)
        except (OSError, tarfile.TarError) as exc:
            raise BackupError(f"{archive}: cannot read backup: {exc}") from None
        try:
            info = inspect_database(staging / DATABASE)
        except PatrdError as exc:
            raise BackupError(f"backup database unusable: {exc}") from None
        if data_dir.exists():
            data_dir.rmdir()
        os.rename(staging, data_dir)
        if key_dest is not None and not key_inside:
            os.replace(key_dest, key_target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if key_dest is not None and not key_inside:
            key_dest.unlink(missing_ok=True)
        raise
    os.chmod(data_dir, 0o700)
    return RestoreResult(
        data_dir=data_dir,
        manifest=manifest,
        database=info,
        secrets_key=key_target if key_dest is not None else None,
    )


def _unpack(tar: tarfile.TarFile, manifest: Manifest, staging: Path, key_dest: Path | None) -> None:
    expected = {f.path: f for f in manifest.files}
    if DATABASE not in expected:
        raise BackupError(f"not a patrd backup: no {DATA}/{DATABASE}")
    seen: set[str] = set()
    for member in tar:
        if member.name == MANIFEST:
            continue
        if member.name == KEY_MEMBER:
            if manifest.secrets_key is None or key_dest is None or KEY_MEMBER in seen:
                raise BackupError(f"refusing {member.name}: not listed in the manifest (or twice)")
            if not member.isfile():
                raise BackupError(f"refusing {member.name}: not a regular file")
            seen.add(KEY_MEMBER)
            _extract(tar, member, manifest.secrets_key, key_dest)
            continue
        rel = _safe_relative(member.name)
        if member.isdir():
            continue  # directories are made as files need them
        if not member.isfile():
            raise BackupError(f"refusing {member.name}: not a regular file")
        entry = expected.get(rel)
        if entry is None or rel in seen:
            raise BackupError(f"refusing {member.name}: not listed in the manifest (or twice)")
        seen.add(rel)
        _extract(tar, member, entry, staging / rel)
    missing = sorted(set(expected) - seen)
    if manifest.secrets_key is not None and KEY_MEMBER not in seen:
        missing.append(KEY_MEMBER)
    if missing:
        raise BackupError(f"backup is incomplete: missing {', '.join(missing)}")


def _safe_relative(name: str) -> str:
    path = PurePosixPath(name)
    parts = path.parts
    if path.is_absolute() or len(parts) < 2 or parts[0] != DATA or ".." in parts:
        raise BackupError(f"refusing {name!r}: outside {DATA}/")
    return PurePosixPath(*parts[1:]).as_posix()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: BackupFile, dest: Path) -> None:
    if member.size != entry.size:
        raise BackupError(f"{member.name}: size {member.size}, manifest says {entry.size}")
    source = tar.extractfile(member)
    if source is None:
        raise BackupError(f"{member.name}: cannot read")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256()
    # Owner-only whatever the archive says: everything in a data dir is private.
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, entry.mode & 0o700)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != entry.sha256:
        raise BackupError(f"{member.name}: checksum mismatch (the backup is damaged)")
