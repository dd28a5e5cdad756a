"""Off-site backups with the real restic: a local repository and an S3 server on loopback.

The S3-compatible server is moto's (``moto_server``, a dev extra) on a free
loopback port; restic talks to it with its ``s3:`` backend like to any other.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import (
    REPO,
    Api,
    Daemon,
    containers_of,
    force_cleanup,
    free_port,
    patrctl,
    volumes_of,
)
from tests.support.waits import until, until_sync

pytestmark = pytest.mark.docker

IMAGE = {"image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}
VOLUMES = {"data": {"path": "/data", "size_gb": 1}}
BUCKET = "patrd-backups"


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port with one bucket; yields its endpoint."""
    import boto3

    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test-key-id",
            aws_secret_access_key="test-secret-key",
            region_name="us-east-1",
        )

        def bucket_created() -> bool:
            try:
                client.create_bucket(Bucket=BUCKET)
            except Exception:
                if proc.poll() is not None:  # the server is gone: say why
                    raise
                return False
            return True

        until_sync(bucket_created, 30, "the S3 server making the bucket", interval=0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def backup_config(tmp_path: Path, kind: str, s3: str | None, schedule: str) -> dict[str, Any]:
    password = tmp_path / "restic-password"  # shared by the old and the fresh install
    if not password.exists():
        password.write_text("correct horse battery staple\n")
        password.chmod(0o600)
    config: dict[str, Any] = {"password_file": str(password), "keep_daily": 7, "keep_last": 20}
    if schedule:
        config["schedule"] = schedule
    if kind == "local":
        config["repository"] = str(tmp_path / "repo")
    else:
        assert s3 is not None
        env = tmp_path / "backup.env"
        env.write_text(
            "AWS_ACCESS_KEY_ID=test-key-id\nAWS_SECRET_ACCESS_KEY=test-secret-key\n"
            "AWS_DEFAULT_REGION=us-east-1\n"
        )
        env.chmod(0o600)
        config["repository"] = f"s3:{s3}/{BUCKET}/patrd"
        config["env_file"] = str(env)
    return config


def docker_exec(container: str, script: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["docker", "exec", "-i", container, "sh", "-c", script],
        input=stdin,
        capture_output=True,
        check=True,
    ).stdout


def running_container(name: str) -> str:
    ids = containers_of(name, all_states=False)
    assert len(ids) == 1, ids
    return ids[0]


async def wait_job(api: Api, job_id: str, timeout: float = 120) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        job = await api.ok("GET", f"/v1/backups/jobs/{job_id}")
        return dict(job) if job["state"] != "running" else None

    done: dict[str, Any] = await until(
        finished, timeout, f"job {job_id} finished", api.daemon, interval=0.3
    )
    return done


async def scheduled_run_after(api: Api, since: float, timeout: float = 120) -> dict[str, Any]:
    """The first scheduled backup job that started after ``since`` and finished."""

    async def first_done() -> dict[str, Any] | None:
        listing = await api.ok("GET", "/v1/backups")
        done = [
            j
            for j in listing["jobs"]
            if j["kind"] == "backup" and j["started_at"] > since and j["state"] != "running"
        ]
        return dict(min(done, key=lambda j: j["started_at"])) if done else None

    run: dict[str, Any] = await until(
        first_done, timeout, f"a scheduled backup after {since}", api.daemon, interval=0.3
    )
    return run


def backup_cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """patrctl with room for a backup or restore to finish."""
    return patrctl(daemon, *args, timeout=300)


async def served(daemon: Daemon, name: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": daemon.host(name)}) as r,
    ):
        return r.status


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_scheduled_backup_then_restore_into_fresh_install(
    tmp_path: Path, test_images: dict[str, str], new_name, kind: str, request: pytest.FixtureRequest
) -> None:
    s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
    name = new_name("obk")
    blob = os.urandom(300 * 1024) + b"\x00\xff end"
    old = Daemon(tmp_path / "old")
    old.workdir.mkdir()
    old.config = {"backup": backup_config(tmp_path, kind, s3, schedule="@every 4s")}
    old.start()
    try:
        async with Api(old) as api:
            await api.ok(
                "POST",
                "/v1/deployments",
                {
                    "name": name,
                    **IMAGE,
                    "volumes": VOLUMES,
                    # The pre hook runs inside the instance before the volume is read.
                    "backup": {"hooks": {"pre": "echo dumped > /data/dump.sql"}},
                },
            )
            await api.wait_status(name, "running")
            container = running_container(name)
            docker_exec(container, "mkdir -p /data/sub && cat > /data/sub/blob.bin", blob)
            written = time.time()
            job = await scheduled_run_after(api, written)
            assert job["state"] == "ok", job
            listing = await api.ok("GET", "/v1/backups")
            assert "test-secret-key" not in str(listing)
            run = next(r for r in listing["runs"] if r["id"] == job["id"])
            assert run["state"] is True and run["deployments"] == [name]
            assert {s["kind"] for s in run["snapshots"]} == {"state", "volume"}
            events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
            assert any(e["kind"] == "backup.ok" and job["id"] in e["message"] for e in events)
            metrics = await _metrics(old)
            assert "patrd_backup_last_success_timestamp_seconds" in metrics
    finally:
        old.stop()
    # The machine is lost: its containers, networks and volumes with it.
    force_cleanup([name])
    assert not volumes_of(name) and not containers_of(name)

    # A fresh install: patrd's state from the repository, then the volume.
    fresh = Daemon(tmp_path / "fresh")
    fresh.workdir.mkdir()
    fresh.config = {"backup": backup_config(tmp_path, kind, s3, schedule="")}
    state = subprocess.run(
        [
            sys.executable,
            "-m",
            "patrd",
            "restore",
            "--snapshot",
            job["id"],
            "--config",
            str(fresh.config_path()),
            "--data-dir",
            str(fresh.data_dir),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    assert state.returncode == 0, (state.stdout, state.stderr)
    assert "1 deployments" in state.stdout, state.stdout
    fresh.start()
    try:
        async with Api(fresh) as api:
            # The restored row already says "running": wait for the container itself.
            await until(
                lambda: len(containers_of(name, all_states=False)) == 1, 60, "instance up", fresh
            )
            await api.wait_status(name, "running")
            docker_exec(running_container(name), "echo stale > /data/stale.txt")
            listing = await api.ok("GET", "/v1/backups")
            assert job["id"] in [r["id"] for r in listing["runs"]]
            cli = backup_cli(fresh, "backup", "restore", job["id"], "--deployment", name)
            assert cli.returncode == 0, (cli.stdout, cli.stderr, fresh.log_tail())
            assert "restore" in cli.stdout and ": ok" in cli.stdout, cli.stdout
            await api.wait_status(name, "running")
            container = running_container(name)
            restored = docker_exec(container, "cat /data/sub/blob.bin")
            assert hashlib.sha256(restored).hexdigest() == hashlib.sha256(blob).hexdigest()
            assert restored == blob
            assert docker_exec(container, "cat /data/dump.sql") == b"dumped\n"
            assert docker_exec(container, "ls /data") == b"dump.sql\nsub\n"  # stale.txt gone
            assert await served(fresh, name) == 200
            events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
            assert any(e["kind"] == "backup.restored" for e in events)
            # The CLI lists the run, and fetches its state archive for patrd restore.
            listed = backup_cli(fresh, "backup", "list")
            assert job["id"] in listed.stdout and name in listed.stdout, listed
            archive = tmp_path / "state.tar"
            fetched = backup_cli(fresh, "backup", "restore", job["id"], "--output", str(archive))
            assert fetched.returncode == 0, fetched
            assert archive.stat().st_mode & 0o777 == 0o600
            with tarfile.open(archive) as tar:
                assert "patrd-backup.json" in tar.getnames()
    finally:
        fresh.stop()
    # Backend credentials and the repository password never reach a log.
    for daemon in (old, fresh):
        text = daemon.log_path.read_text()
        assert "test-secret-key" not in text and "correct horse" not in text


async def test_failing_hook_fails_that_backup_and_leaves_the_app_serving(
    tmp_path: Path, test_images: dict[str, str], new_name
) -> None:
    broken, fine = new_name("ohook"), new_name("ofine")
    daemon = Daemon(tmp_path / "d")
    daemon.workdir.mkdir()
    daemon.config = {"backup": backup_config(tmp_path, "local", None, schedule="")}
    daemon.start()
    try:
        async with Api(daemon) as api:
            hooks = {"pre": "echo cannot dump >&2; exit 3", "post": "touch /data/post-ran"}
            for name, backup in ((broken, {"hooks": hooks}), (fine, {})):
                await api.ok(
                    "POST",
                    "/v1/deployments",
                    {"name": name, **IMAGE, "volumes": VOLUMES, "backup": backup},
                )
            await api.wait_status(broken, "running")
            await api.wait_status(fine, "running")
            before = running_container(broken)
            for name in (broken, fine):
                docker_exec(running_container(name), "echo data > /data/file.txt")
            job = await api.ok("POST", "/v1/backups")
            assert job["state"] == "running"
            status, busy = await api.call("POST", "/v1/backups")
            assert status == 409, busy
            job = await wait_job(api, job["id"])
            assert job["state"] == "failed", job
            assert broken in job["message"] and "pre hook exited 3" in job["message"]
            assert "cannot dump" in job["message"]
            # The app was never stopped: same container, still serving.
            assert running_container(broken) == before
            assert await served(daemon, broken) == 200
            assert (await api.ok("GET", f"/v1/deployments/{broken}"))["status"] == "running"
            # The post hook ran anyway (cleanup), and the other deployment was backed up.
            docker_exec(before, "test -f /data/post-ran")
            events = (await api.ok("GET", f"/v1/deployments/{broken}/events"))["events"]
            assert any(e["kind"] == "backup.failed" for e in events), events
            events = (await api.ok("GET", f"/v1/deployments/{fine}/events"))["events"]
            assert any(e["kind"] == "backup.ok" for e in events), events
            runs = (await api.ok("GET", "/v1/backups"))["runs"]
            assert [r["deployments"] for r in runs if r["id"] == job["id"]] == [[fine]]
            # A restore of a run that does not hold the deployment stops nothing.
            status, missing = await api.call(
                "POST", f"/v1/backups/{job['id']}/restore", {"deployment": broken}
            )
            assert status == 404 and "holds no volumes" in missing["message"], missing
            assert running_container(broken) == before
            metrics = await _metrics(daemon)
            assert 'patrd_backup_runs_total{result="failed"} 1.0' in metrics
            assert "patrd_backup_deployment_failures_total 1.0" in metrics
            assert "patrd_backup_last_success_timestamp_seconds" not in metrics
    finally:
        daemon.stop()


async def _metrics(daemon: Daemon) -> str:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.get("http://patrd/metrics") as r,
    ):
        assert r.status == 200
        return await r.text()


async def test_a_failed_restore_starts_the_app_again_with_its_data_untouched(
    tmp_path: Path, test_images: dict[str, str], new_name
) -> None:
    name = new_name("orst")
    daemon = Daemon(tmp_path / "d")
    daemon.workdir.mkdir()
    daemon.config = {"backup": backup_config(tmp_path, "local", None, schedule="")}
    daemon.start()
    try:
        async with Api(daemon) as api:
            await api.ok("POST", "/v1/deployments", {"name": name, **IMAGE, "volumes": VOLUMES})
            await api.wait_status(name, "running")
            docker_exec(running_container(name), "echo backed-up > /data/file.txt")
            job = await wait_job(api, (await api.ok("POST", "/v1/backups"))["id"])
            assert job["state"] == "ok", job
            docker_exec(running_container(name), "echo newer > /data/file.txt")
            # The repository loses its data: the snapshot is listed but cannot be read.
            for part in ("data", "index"):
                for item in (tmp_path / "repo" / part).rglob("*"):
                    if item.is_file():
                        item.unlink()
            restore = await api.ok("POST", f"/v1/backups/{job['id']}/restore", {"deployment": name})
            restore = await wait_job(api, restore["id"])
            assert restore["state"] == "failed", restore
            assert any("stopping" in d for d in restore["details"]), restore
            assert any("started" in d for d in restore["details"]), restore
            await api.wait_status(name, "running")
            assert await served(daemon, name) == 200
            assert docker_exec(running_container(name), "cat /data/file.txt") == b"newer\n"
            events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
            assert any(e["kind"] == "backup.restore_failed" for e in events), events
    finally:
        daemon.stop()
