"""Backup and restore of a data dir (patrd/state/archive.py), the route and the CLI verbs.

Real files, a real SQLite store and a real aiohttp app on a unix socket; no
Docker (the full round trip with containers is tests/integration/test_backup.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import socket
import sqlite3
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app, serve_api
from patrd.cli import main as cli
from patrd.model import spec
from patrd.model.views import InstanceView
from patrd.settings.config import Config, DaemonConfig
from patrd.state import archive as backup
from patrd.state.archive import BackupError, create_backup, restore
from patrd.state.store import Store


class NoController:
    def wake(self, deployment_id: str | None = None) -> None:
        return None

    def instances(self, deployment_id: str) -> list[InstanceView]:
        return []

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {}


@pytest.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """A live data dir: open store (WAL), files of other parts, things to leave out."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    store = await Store.open(data / "patrd.db")
    await store.create_deployment(
        spec.parse_create(
            {"name": "web", "image": "acme/web", "ports": {"80": "http"}}, region="local"
        )
    )
    (data / "tls").mkdir()
    (data / "tls" / "cert.pem").write_text("CERT")
    (data / "tls" / "key.pem").write_text("KEY")
    (data / "tls" / "key.pem").chmod(0o600)
    (data / "patrd.lock").write_text("")
    (data / "pre-migration").mkdir()
    (data / "pre-migration" / "patrd-v1-x.db").write_text("old")
    (data / "link.pem").symlink_to(data / "tls" / "cert.pem")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(data / "api.sock"))
    metrics = sqlite3.connect(data / "metrics.db")
    metrics.execute("PRAGMA journal_mode=WAL")
    metrics.execute("CREATE TABLE samples (v)")
    metrics.execute("INSERT INTO samples VALUES (42)")
    metrics.commit()
    assert (data / "metrics.db-wal").exists()
    try:
        yield data
    finally:
        metrics.close()
        await store.close()


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: (tar.extractfile(m) or io.BytesIO()).read() for m in tar.getmembers()}


async def test_backup_contents_and_restore_round_trip(data_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "etc" / "secrets.key"
    key.parent.mkdir()
    key.write_bytes(b"K" * 32)
    key.chmod(0o600)
    archive, manifest = await create_backup(data_dir, data_dir / "patrd.db", key)
    kept = tmp_path / "backup.tar"
    try:
        assert archive.stat().st_mode & 0o777 == 0o600
        got = members(archive)
        assert sorted(got) == [
            "data/metrics.db",
            "data/patrd.db",
            "data/tls/cert.pem",
            "data/tls/key.pem",
            "key/secrets.key",
            "patrd-backup.json",
        ]
        order = list(got)
        assert order[0] == "data/patrd.db" and order[-1] == "patrd-backup.json"
        listed = json.loads(got["patrd-backup.json"])
        assert listed["deployments"] == 1 and listed["schema_version"] == manifest.schema_version
        for f in manifest.files:
            assert hashlib.sha256(got[f"data/{f.path}"]).hexdigest() == f.sha256
        assert manifest.secrets_key is not None and manifest.secrets_key.size == 32
        # Snapshots are standalone databases: no -wal needed to read them.
        assert got["data/metrics.db"][:16] == b"SQLite format 3\0"
    finally:
        os.replace(archive, kept)
    assert list((data_dir / backup.TMP_DIR).iterdir()) == [], "temporary files removed"

    target, key_target = tmp_path / "restored" / "data", tmp_path / "new-etc" / "secrets.key"
    result = restore(kept, target, key_target)
    assert result.database.deployments == 1
    assert result.secrets_key == key_target and key_target.read_bytes() == b"K" * 32
    assert key_target.stat().st_mode & 0o777 == 0o600
    assert target.stat().st_mode & 0o777 == 0o700
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "metrics.db",
        "patrd.db",
        "tls",
        "tls/cert.pem",
        "tls/key.pem",
    ]
    for path in target.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} readable by others"
    assert (target / "tls" / "key.pem").read_text() == "KEY"
    conn = sqlite3.connect(target / "metrics.db")
    assert conn.execute("SELECT v FROM samples").fetchall() == [(42,)]
    conn.close()
    store = await Store.open(target / "patrd.db")
    try:
        assert [d.name for d in await store.list_deployments()] == ["web"]
    finally:
        await store.close()
    assert not list(target.parent.glob(".*restore*")), "no staging left behind"


async def test_default_key_inside_the_data_dir_travels_and_comes_back(
    data_dir: Path, tmp_path: Path
) -> None:
    (data_dir / "secrets.key").write_bytes(b"D" * 32)
    archive, _ = await create_backup(data_dir, data_dir / "patrd.db", data_dir / "secrets.key")
    assert "data/secrets.key" not in members(archive) and "key/secrets.key" in members(archive)
    target = tmp_path / "r"
    result = await asyncio.to_thread(restore, archive, target)
    assert result.secrets_key == target / "secrets.key"
    assert (target / "secrets.key").read_bytes() == b"D" * 32
    archive.unlink()


async def test_restore_refuses_a_non_empty_dir_and_an_existing_key(
    data_dir: Path, tmp_path: Path
) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"K" * 32)
    archive, _ = await create_backup(data_dir, data_dir / "patrd.db", key)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "patrd.db").write_text("someone's data")
    with pytest.raises(BackupError, match="not empty"):
        restore(archive, busy)
    assert (busy / "patrd.db").read_text() == "someone's data"
    with pytest.raises(BackupError, match="exists: move it away"):
        restore(archive, tmp_path / "fresh", key)
    assert not (tmp_path / "fresh").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore(archive, empty).database.deployments == 1  # an empty dir is fine
    archive.unlink()


def _tamper(archive: Path, out: Path, change: Callable[[tarfile.TarFile, list[Any]], None]) -> Path:
    """Copy ``archive`` member by member, letting ``change`` add or alter members."""
    items: list[Any] = []
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            items.append([m, (tar.extractfile(m) or io.BytesIO()).read()])
    with tarfile.open(out, "w") as tar:
        change(tar, items)
        for m, data in items:
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return out


def _extra(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> Callable[..., None]:
    def change(tar: tarfile.TarFile, items: list[Any]) -> None:
        member = tarfile.TarInfo(name)
        member.type = kind
        if kind == tarfile.SYMTYPE:
            member.linkname = "/etc/passwd"
        items.insert(1, [member, data if kind == tarfile.REGTYPE else b""])

    return change


def _flip_byte(tar: tarfile.TarFile, items: list[Any]) -> None:
    for item in items:
        if item[0].name == "data/tls/cert.pem":
            item[1] = b"CERX"


def _drop(tar: tarfile.TarFile, items: list[Any]) -> None:
    items[:] = [i for i in items if i[0].name != "data/tls/key.pem"]


def _newer_format(tar: tarfile.TarFile, items: list[Any]) -> None:
    for item in items:
        if item[0].name == "patrd-backup.json":
            item[1] = json.dumps({**json.loads(item[1]), "format": 99}).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_extra("data/../evil"), "outside data/"),
        (_extra("/etc/evil"), "outside data/"),
        (_extra("evil"), "outside data/"),
        (_extra("data/link", kind=tarfile.SYMTYPE), "not a regular file"),
        (_extra("data/unlisted"), "not listed in the manifest"),
        (_flip_byte, "checksum mismatch"),
        (_drop, "missing tls/key.pem"),
        (_newer_format, "format 99 is newer"),
    ],
    ids=["dotdot", "absolute", "top-level", "symlink", "unlisted", "checksum", "missing", "format"],
)
async def test_restore_refuses_tampered_archives_and_leaves_nothing(
    data_dir: Path, tmp_path: Path, change: Callable[..., None], message: str
) -> None:
    archive, _ = await create_backup(data_dir, data_dir / "patrd.db")
    bad = _tamper(archive, tmp_path / "bad.tar", change)
    archive.unlink()
    target = tmp_path / "out" / "data"
    with pytest.raises(BackupError, match=message):
        restore(bad, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == [], "staging removed"
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar" * 100)
    with pytest.raises(BackupError, match="cannot read backup"):
        restore(junk, tmp_path / "d")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
    with pytest.raises(BackupError, match=r"no patrd-backup\.json"):
        restore(plain, tmp_path / "d")
    assert not (tmp_path / "d").exists()


# --- the route and the CLI ------------------------------------------------------


def _config(data_dir: Path) -> Config:
    return replace(Config(), daemon=DaemonConfig(data_dir=data_dir))


async def test_backup_route_is_refused_over_tcp(data_dir: Path) -> None:
    store = await Store.open(data_dir / "patrd.db")
    try:
        app = build_app(store, NoController(), _config(data_dir), token=None)
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/v1/backup")
            assert resp.status == 403
            body = await resp.json()
            assert body["error"] == "forbidden" and "unix socket" in body["message"]
    finally:
        await store.close()


async def test_patrctl_backup_and_patrd_restore(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await Store.open(data_dir / "patrd.db")
    sock = tmp_path / "api.sock"
    runner = await serve_api(
        build_app(store, NoController(), _config(data_dir), token=None),
        socket_path=sock,
        socket_mode=0o600,
        tcp=None,
    )
    out = tmp_path / "out" / "nightly.tar"
    out.parent.mkdir()
    out.write_text("yesterday")  # replaced atomically
    try:
        code = await asyncio.to_thread(cli.main, ["--socket", str(sock), "backup", str(out)])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert f"wrote {out}" in printed.out and "1 deployments" in printed.out
        assert "holds secrets" in printed.err
        assert out.stat().st_mode & 0o777 == 0o600
        assert "data/patrd.db" in members(out)
        assert sorted(p.name for p in out.parent.iterdir()) == ["nightly.tar"]

        missing = await asyncio.to_thread(
            cli.main, ["--socket", str(tmp_path / "nope.sock"), "backup", str(out)]
        )
        assert missing == 1 and "cannot reach patrd" in capsys.readouterr().err
    finally:
        await runner.cleanup()
        await store.close()

    config = tmp_path / "patrd.toml"
    config.write_text(f'[daemon]\ndata_dir = "{tmp_path / "restored"}"\n')
    assert cli.daemon_main(["restore", str(out), "--config", str(config)]) == 0
    printed = capsys.readouterr()
    assert "restored 4 files" in printed.out and "1 deployments" in printed.out
    assert (tmp_path / "restored" / "patrd.db").is_file()
    assert cli.daemon_main(["restore", str(out), "--config", str(config)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert cli.daemon_main(["restore", str(out)]) == 2
    assert "--data-dir" in capsys.readouterr().err
