"""Scoped tokens and the audit log on a real daemon (TCP listener, real Docker engine).

Tokens are made with the real ``patrctl`` over the unix socket; the calls
with them go over the daemon's TCP listener.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, patrctl, running_tcp_daemon
from tests.support.waits import until_sync

pytestmark = pytest.mark.docker

ADMIN = "integration-admin-token-0123456789"


class Site:
    def __init__(self, daemon: Daemon, port: int) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{port}"

    def patrctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return patrctl(self.daemon, *args)


@pytest.fixture
def site(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[Site]:
    with running_tcp_daemon(tmp_path, ADMIN) as (daemon, port):
        yield Site(daemon, port)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, site: Site, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(
        method, site.base + path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


def create_token(site: Site, name: str, *flags: str) -> str:
    done = site.patrctl("token", "create", name, *flags)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("patr_") and "shown once" in done.stderr
    return token


def audit(site: Site, *flags: str) -> list[dict[str, Any]]:
    done = site.patrctl("audit", "--json", *flags)
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = json.loads(done.stdout)["entries"]
    return entries


async def test_read_token_cannot_create_and_the_audit_log_records_both_calls(
    site: Site, http: aiohttp.ClientSession, new_name: Any
) -> None:
    name = new_name("acc")
    body = {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}
    viewer = create_token(site, "viewer", "--scope", "read", "--expires", "1d")

    status, data = await call(http, site, "GET", "/v1/deployments", viewer)
    assert status == 200
    status, data = await call(http, site, "POST", "/v1/deployments", viewer, body)
    assert status == 403, data
    assert data["needed_scope"] == "write" and "'write'" in data["message"]
    status, data = await call(http, site, "GET", f"/v1/deployments/{name}", ADMIN)
    assert status == 404  # the refused call created nothing

    writer = create_token(site, "ops", "--scope", "write")
    status, data = await call(http, site, "POST", "/v1/deployments", writer, body)
    assert status == 201, data
    async with Api(site.daemon) as api:
        await api.wait_status(name, "running")

    entries = audit(site)
    me = f"uid:{os.getuid()}"
    rows = [(e["who"], e["method"], e["path"], e["status"]) for e in entries]
    assert rows == [
        (me, "POST", "/v1/tokens", 201),
        ("token:viewer", "POST", "/v1/deployments", 403),
        (me, "POST", "/v1/tokens", 201),
        ("token:ops", "POST", "/v1/deployments", 201),
    ]
    refused = entries[1]
    assert "needs the 'write' scope" in refused["detail"]
    assert not any(viewer in json.dumps(e) or writer in json.dumps(e) for e in entries)
    assert [e["who"] for e in audit(site, "--who", "token:ops")] == ["token:ops"]


async def test_deploy_token_stops_only_its_deployment_and_revocation_is_immediate(
    site: Site, http: aiohttp.ClientSession, new_name: Any
) -> None:
    mine, other = new_name("acc"), new_name("acc")
    async with Api(site.daemon) as api:
        for name in (mine, other):
            await api.ok(
                "POST",
                "/v1/deployments",
                {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
            )
        await api.wait_status(mine, "running")
        ci = create_token(site, "ci", "--scope", "deploy", "--deployment", mine)

        status, data = await call(http, site, "POST", f"/v1/deployments/{other}/stop", ci)
        assert status == 403, data
        assert f"limited to deployments: {mine}" in data["message"]
        status, data = await call(http, site, "DELETE", f"/v1/deployments/{mine}", ci)
        assert status == 403 and data["needed_scope"] == "write"
        status, data = await call(http, site, "POST", f"/v1/deployments/{mine}/stop", ci)
        assert status == 202, data
        await api.wait_status(mine, "stopped")
        assert (await api.ok("GET", f"/v1/deployments/{other}"))["intent"] == "run"

        done = site.patrctl("token", "revoke", "ci")
        assert done.returncode == 0, done.stderr
        status, data = await call(http, site, "POST", f"/v1/deployments/{mine}/start", ci)
        assert status == 401, data

    # Refusals reach the audit log in batches (every 0.25 s): wait for the last one.
    def four_entries() -> list[dict[str, Any]] | None:
        found = audit(site, "--deployment", mine)
        return found if len(found) >= 4 else None

    by_deployment = until_sync(four_entries, 10, "4 audit entries", interval=0.2)
    assert [(e["who"], e["method"], e["status"]) for e in by_deployment] == [
        (f"uid:{os.getuid()}", "POST", 201),  # its creation (the name from Location)
        ("token:ci", "DELETE", 403),
        ("token:ci", "POST", 202),
        ("anonymous:127.0.0.1", "POST", 401),
    ]
