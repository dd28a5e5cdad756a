"""``/v1/backups`` and ``patrctl backup`` without restic: wiring, validation, refusals.

The runs themselves (restic, Docker volumes, hooks) are exercised for real in
tests/integration/test_offsite_backup.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app, serve_api
from patrd.cli.main import main, parse_args
from patrd.model.instances import ExecResult, Instance, VolumeInfo
from patrd.settings.config import ApiConfig, Config, Listen, ProxyConfig
from patrd.state.backup_config import BackupConfig
from patrd.state.offsite import OffsiteBackups, Paths
from patrd.state.store import Store

CONFIG = Config(
    api=ApiConfig(max_body_bytes=64 * 1024),
    proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 80),), base_domain="example.test"),
)


class NoController:
    def wake(self, deployment_id: str | None = None) -> None:
        return None

    def instances(self, deployment_id: str) -> list[Any]:
        return []

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {}


class NoEngine:
    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return []

    async def list_volumes(self, deployment: str) -> list[VolumeInfo]:
        return []

    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str:
        raise AssertionError("not in these tests")

    async def exec(self, container_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        raise AssertionError("not in these tests")


def service(store: Store, tmp_path: Path) -> OffsiteBackups:
    config = BackupConfig(repository=str(tmp_path / "repo"), binary="/nonexistent/restic")
    paths = Paths(data_dir=tmp_path, database=tmp_path / "patrd.db", secrets_key=None)
    return OffsiteBackups(config, paths, store, NoEngine(), NoController().wake)


async def test_not_configured(store: Store, tmp_path: Path) -> None:
    app = build_app(store, NoController(), CONFIG, token=None)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/backups")
        assert (await resp.json()) == {"configured": False, "runs": [], "jobs": []}
        for path in ("/v1/backups", "/v1/backups/latest/restore"):
            resp = await client.post(path, json={"deployment": "web"})
            body = await resp.json()
            assert resp.status == 409 and "[backup] repository" in body["message"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "deployment"),
        ({"deployment": ""}, 422, "deployment"),
        ({"deployment": "web", "when": "now"}, 422, "when"),
        ({"deployment": "web", "volume": 3}, 422, "volume"),
        ({"deployment": "web", "target": 3}, 422, "target"),
        (["web"], 422, "body"),
    ],
)
async def test_restore_body_is_checked(
    store: Store, tmp_path: Path, body: Any, status: int, field: str
) -> None:
    app = build_app(store, NoController(), CONFIG, token=None, backups=service(store, tmp_path))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/v1/backups/latest/restore", json=body)
        data = await resp.json()
        assert (resp.status, data.get("field")) == (status, field), data


async def test_host_paths_and_state_only_on_the_unix_socket(store: Store, tmp_path: Path) -> None:
    app = build_app(store, NoController(), CONFIG, token=None, backups=service(store, tmp_path))
    async with TestClient(TestServer(app)) as client:  # TCP
        resp = await client.post(
            "/v1/backups/latest/restore", json={"deployment": "web", "target": "/tmp/x"}
        )
        assert resp.status == 403
        resp = await client.get("/v1/backups/latest/state")
        assert resp.status == 403


async def test_a_broken_repository_is_reported_not_raised(store: Store, tmp_path: Path) -> None:
    app = build_app(store, NoController(), CONFIG, token=None, backups=service(store, tmp_path))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/backups")
        data = await resp.json()
        assert resp.status == 200 and data["configured"] is True
        assert data["runs"] == [] and "cannot run /nonexistent/restic" in data["error"]
        assert data["schedule"] is None and data["next_run_at"] is None
        # A run fails as a job, with the reason.
        resp = await client.post("/v1/backups")
        job = await resp.json()
        assert resp.status == 202 and job["kind"] == "backup"
        for _ in range(100):
            resp = await client.get(f"/v1/backups/jobs/{job['id']}")
            job = await resp.json()
            if job["state"] != "running":
                break
            await asyncio.sleep(0.02)
        assert job["state"] == "failed" and "repository" in job["message"]
        resp = await client.get("/v1/backups/jobs/nope")
        assert resp.status == 404


def test_backup_words_and_files() -> None:
    assert parse_args(["backup", "/root/x.tar"]).file == "/root/x.tar"
    args = parse_args(["backup", "restore", "latest", "--deployment", "db", "--volume", "data"])
    assert (args.file, args.snapshot, args.deployment, args.volume) == (
        "restore",
        "latest",
        "db",
        "data",
    )


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["backup", "restore"], 2, "needs SNAPSHOT"),
        (["backup", "restore", "latest"], 2, "--deployment NAME"),
        (["backup", "out.tar", "extra"], 2, "no second argument"),
        (["backup", "list"], 0, "not configured"),
        (["backup", "run"], 1, "not configured"),
    ],
)
async def test_cli_backup_actions(
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    sock = tmp_path / "api.sock"
    runner = await serve_api(
        build_app(store, NoController(), CONFIG, token=None),
        socket_path=sock,
        socket_mode=0o600,
        tcp=None,
    )
    try:
        got = await asyncio.to_thread(main, ["--socket", str(sock), *argv])
    finally:
        await runner.cleanup()
    out = capsys.readouterr()
    assert got == code, out
    assert message in out.out + out.err


async def test_one_job_at_a_time_from_the_moment_it_is_accepted(
    store: Store, tmp_path: Path
) -> None:
    from patrd.model.errors import Conflict

    backups = service(store, tmp_path)
    release = asyncio.Event()

    async def work(job: Any) -> None:
        await release.wait()
        backups.finish(job, ok=True, message="done")

    first = backups.new_job("restore")
    with pytest.raises(Conflict, match=f"restore {first.id} is running"):
        backups.new_job("backup")  # before the first one's task even started
    backups.spawn(first, work)
    await asyncio.sleep(0)
    assert backups.busy
    release.set()
    for _ in range(100):
        if not backups.busy:
            break
        await asyncio.sleep(0.01)
    assert not backups.busy and first.state == "ok"
    assert backups.new_job("backup").id != first.id
