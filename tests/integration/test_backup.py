"""Back up a running daemon, lose the machine's state, restore, converge."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import REPO, Api, Daemon, containers_of, force_cleanup, networks_of
from tests.support.waits import issued_certificate, until

pytestmark = pytest.mark.docker

IMAGE = {"image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, check=False
    )


async def proxied(daemon: Daemon, name: str, timeout: float = 30) -> str:
    async def served() -> str | None:
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"http://127.0.0.1:{daemon.proxy_port}/cgi-bin/env",
                headers={"Host": daemon.host(name)},
            ) as r,
        ):
            return await r.text() if r.status == 200 else None

    text: str = await until(served, timeout, f"{name} served", daemon)
    return text


async def certificate(api: Api, domain: str, timeout: float = 20) -> dict[str, Any]:
    found: dict[str, Any] = await until(
        lambda: issued_certificate(api, domain),
        timeout,
        f"a certificate for {domain}",
        interval=0.2,
    )
    return found


async def test_backup_wipe_restore_converges(
    tmp_path: Path, test_images: dict[str, str], names: list[str], new_name
) -> None:
    web, paused, later = new_name("bk-web"), new_name("bk-stop"), new_name("bk-later")
    daemon = Daemon(tmp_path)
    daemon.start()
    # A stand-in for files other parts keep in the data dir (certificates).
    (daemon.data_dir / "certs").mkdir(exist_ok=True)
    (daemon.data_dir / "certs" / "example.org.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    backup = tmp_path / "backups" / "patrd.tar"
    backup.parent.mkdir()
    try:
        async with Api(daemon) as api:
            await api.ok(
                "POST",
                "/v1/deployments",
                {"name": web, **IMAGE, "env": {"GREETING": "kept"}, "scale": {"min": 2, "max": 2}},
            )
            await api.ok("POST", "/v1/deployments", {"name": paused, **IMAGE})
            # An encrypted secret: restoring it needs the secrets key from the backup.
            await api.ok("POST", "/v1/secrets", {"name": "bk-token", "value": "s3cret"})
            await api.wait_status(web, "running")
            await api.ok("POST", f"/v1/deployments/{paused}/stop")
            await api.wait_status(paused, "stopped")
            events_before = (await api.ok("GET", f"/v1/deployments/{web}/events"))["events"]
            # A managed URL whose certificate (local CA) must come back, not be re-issued.
            domain = f"{web}.bk.localhost"
            await api.ok(
                "POST",
                "/v1/urls",
                {"domain": domain, "target": {"deployment": web, "port": 80}},
            )
            cert_before = await certificate(api, domain)

            # Online: traffic keeps flowing while the snapshot is taken.
            started = time.monotonic()
            done = run("patrd.cli.main", "--socket", str(daemon.socket), "backup", str(backup))
            backup_s = time.monotonic() - started
            assert done.returncode == 0, done.stderr
            assert "GREETING=kept" in await proxied(daemon, web)
            assert f"wrote {backup}" in done.stdout and "2 deployments" in done.stdout
            assert "secrets" in done.stderr
            assert backup.stat().st_mode & 0o777 == 0o600

            # Changes after the backup are not in it.
            await api.ok("POST", "/v1/deployments", {"name": later, **IMAGE})
    finally:
        assert daemon.stop() == 0

    with tarfile.open(backup) as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = json.loads(tar.extractfile("patrd-backup.json").read())  # type: ignore[union-attr]
    assert {"data/patrd.db", "key/secrets.key", "data/certs/example.org.pem"} <= set(members)
    assert not any(n.endswith(("-wal", "-shm", "patrd.lock")) for n in members), members
    assert manifest["deployments"] == 2 and "secrets" in manifest["warning"]
    key = daemon.data_dir / "secrets.key"
    key_bytes = key.read_bytes()

    # The machine is lost: no containers, no networks, no data dir.
    force_cleanup(names)
    shutil.rmtree(daemon.data_dir)

    restored = run("patrd", "restore", str(backup), "--data-dir", str(daemon.data_dir))
    assert restored.returncode == 0, restored.stderr
    assert "2 deployments" in restored.stdout
    assert key.read_bytes() == key_bytes
    assert key.stat().st_mode & 0o777 == 0o600
    assert daemon.data_dir.stat().st_mode & 0o777 == 0o700
    again = run("patrd", "restore", str(backup), "--data-dir", str(daemon.data_dir))
    assert again.returncode == 1 and "not empty" in again.stderr

    daemon.start()
    try:
        async with Api(daemon) as api:
            shown = await api.wait_status(web, "running")
            assert len(shown["instances"]) == 2
            assert "GREETING=kept" in await proxied(daemon, web)
            assert (await api.ok("GET", f"/v1/deployments/{paused}"))["status"] == "stopped"
            assert (await api.call("GET", f"/v1/deployments/{later}"))[0] == 404
            # The daemon refuses to start with a key that does not match the database,
            # so being here means the key came back with it.
            assert (await api.call("GET", "/v1/secrets/bk-token"))[0] == 200
            urls = (await api.ok("GET", "/v1/urls"))["urls"]
            assert [u["domain"] for u in urls] == [domain]
            assert (await certificate(api, domain))["serial"] == cert_before["serial"]
            events_after = (await api.ok("GET", f"/v1/deployments/{web}/events"))["events"]
            assert events_after[: len(events_before)] == events_before
    finally:
        assert daemon.stop() == 0
    assert len(containers_of(web, all_states=False)) == 2
    assert containers_of(paused) == [] and networks_of(later) == []
    print(f"backup of 2 deployments: {backup.stat().st_size} bytes in {backup_s:.2f}s")
