"""Forward-only migrations, tested from every released schema (tests/fixtures/db).

Each ``v<N>.db`` was written by the release that had schema N (see
``make_fixture.py``); ``v<N>.json`` is what that release read back from it.
The current ``Store`` must open every one, migrate it to the newest schema
(after copying the old file aside), and read the same deployments back.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from patrd.model import spec
from patrd.model.deployment import Intent, Status
from patrd.model.errors import StoreError
from patrd.state.database import inspect_database
from patrd.state.migrations import MIGRATIONS
from patrd.state.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "db"
FIXTURE_DBS = sorted(FIXTURES.glob("v*.db"), key=lambda p: int(p.stem[1:]))


def test_there_is_a_fixture_for_schema_v1() -> None:
    assert [p.name for p in FIXTURE_DBS][:1] == ["v1.db"]


@pytest.mark.parametrize("fixture", FIXTURE_DBS, ids=lambda p: p.stem)
async def test_fixture_migrates_and_reads_back(fixture: Path, tmp_path: Path) -> None:
    expected: dict[str, Any] = json.loads(fixture.with_suffix(".json").read_text())
    db = tmp_path / "patrd.db"
    shutil.copyfile(fixture, db)
    assert expected["schema_version"] == int(fixture.stem[1:])

    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        if expected["schema_version"] < len(MIGRATIONS):
            assert store.migrated_from is not None
            version, copy = store.migrated_from
            assert version == expected["schema_version"]
            assert copy.parent == tmp_path / "pre-migration"
            assert copy.read_bytes()[:16] == b"SQLite format 3\0"
            assert inspect_database(copy).schema_version == version
            assert copy.stat().st_mode & 0o777 == 0o600
        else:
            assert store.migrated_from is None
        assert await store.owner_id() == expected["owner_id"]

        records = {r.name: r for r in await store.list_deployments()}
        assert sorted(records) == sorted(d["name"] for d in expected["deployments"])
        for want in expected["deployments"]:
            got = records[want["name"]]
            assert got.id == want["id"]
            assert got.revision == want["revision"]
            assert got.intent.value == want["intent"]
            assert got.status.value == want["status"]
            assert got.status_reason == want["status_reason"]
            body = got.spec.to_json()
            for key, value in want["spec"].items():
                if isinstance(value, dict) and key == "scale":
                    # Later releases add keys with defaults (scale.target_cpu, issue 7).
                    assert {k: body[key][k] for k in value} == value, (want["name"], key)
                else:
                    assert body[key] == value, (want["name"], key)
            events = await store.list_events(got.id, limit=1000)
            assert [[e.kind, e.message] for e in events] == want["events"]

        # The migrated database takes every kind of write.
        created = await store.create_deployment(
            spec.parse_create(
                {"name": "after-upgrade", "image": "acme/new", "ports": {"80": "http"}},
                region="local",
            )
        )
        await store.update_spec(
            "web", lambda current: spec.parse_update(current, {"env": {"B": "2"}})
        )
        await store.set_intent("draft", Intent.RUN)
        await store.set_status(created.id, Status.RUNNING)
        doomed = records["doomed"]
        await store.purge(doomed.id)
        assert await store.get_by_id(doomed.id) is None
    finally:
        await store.close()

    # Opening again is a no-op: nothing to migrate, no new copy.
    copies = sorted((tmp_path / "pre-migration").glob("*.db"))
    again = await Store.open(db)
    try:
        assert again.migrated_from is None
        assert (await again.get_deployment("web")).spec.env == (("B", "2"),)
    finally:
        await again.close()
    assert sorted((tmp_path / "pre-migration").glob("*.db")) == copies


async def test_a_database_from_a_newer_patrd_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "patrd.db"
    shutil.copyfile(FIXTURE_DBS[0], db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"newer than this patrd"):
        await Store.open(db)
    with pytest.raises(StoreError, match=r"newer than this patrd"):
        inspect_database(db)
    # Refused before anything was written: the file is untouched.
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    conn.close()


async def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each migration is one transaction: a broken one leaves the old schema intact."""
    db = tmp_path / "patrd.db"
    shutil.copyfile(FIXTURE_DBS[0], db)
    # v2 creates a table, then fails (meta exists): the table must not survive.
    broken = (MIGRATIONS[0], "CREATE TABLE half_done (x);\nCREATE TABLE meta (x);")
    monkeypatch.setattr("patrd.state.store_base.MIGRATIONS", broken)
    with pytest.raises(StoreError, match="already exists"):
        await Store.open(db)
    monkeypatch.undo()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "half_done" not in tables
    assert len(list((tmp_path / "pre-migration").glob("patrd-v1-*.db"))) == 1
    store = await Store.open(db)  # the real migrations still apply cleanly afterwards
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert len(await store.list_deployments()) == 4
    finally:
        await store.close()


def test_inspect_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "patrd.db"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not readable"):
        inspect_database(bad)
    with pytest.raises(StoreError, match="no such database"):
        inspect_database(tmp_path / "missing.db")
