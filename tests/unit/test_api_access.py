"""Scoped tokens, scope refusals and the audit log over the HTTP API (real Store)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from patrd.api.app import build_app, serve_api
from patrd.model.scopes import Scope, token_digest
from patrd.settings.config import Config
from patrd.state.audit_buffer import RefusalBuffer
from patrd.state.store import Store
from patrd.state.tokens import AUDIT_TRIM_EVERY, AccessStore, AuditRow
from patrd.state.vault import Vault
from tests.support.api_fakes import CONFIG, WEB, FakeController

ADMIN = "the-admin-token-from-token-file"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(store: Store, tmp_path: Path) -> AsyncIterator[Client]:
    vault = await Vault.open(store, tmp_path / "secrets.key")
    app = build_app(store, FakeController(), CONFIG, token=ADMIN, vault=vault)
    async with TestClient(TestServer(app)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_token(client: Client, name: str, scope: str, **extra: Any) -> str:
    resp = await client.post(
        "/v1/tokens", json={"name": name, "scope": scope, **extra}, headers=bearer(ADMIN)
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    token: str = body["token"]
    return token


async def audit(client: Client, **query: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/audit", params=query, headers=bearer(ADMIN))
    assert resp.status == 200, await resp.text()
    entries: list[dict[str, Any]] = (await resp.json())["entries"]
    return entries


async def test_a_read_token_reads_but_cannot_create_and_both_calls_are_audited(
    client: Client,
) -> None:
    token = await make_token(client, "viewer", "read")
    assert (await client.get("/v1/deployments", headers=bearer(token))).status == 200
    resp = await client.post("/v1/deployments", json=WEB, headers=bearer(token))
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "forbidden"
    assert body["needed_scope"] == "write"
    assert "'write'" in body["message"] and "token:viewer" in body["message"]
    ok = await client.post("/v1/deployments", json=WEB, headers=bearer(ADMIN))
    assert ok.status == 201
    entries = await audit(client)
    rows = [(e["who"], e["method"], e["path"], e["deployment"], e["status"]) for e in entries]
    assert ("token_file", "POST", "/v1/tokens", None, 201) in rows
    assert ("token:viewer", "POST", "/v1/deployments", None, 403) in rows  # body never read
    assert ("token_file", "POST", "/v1/deployments", "web", 201) in rows  # from Location
    # Reads are not audited; refusals carry the reason.
    assert not any(e["method"] == "GET" and e["status"] == 200 for e in entries)
    refused = next(e for e in entries if e["status"] == 403)
    assert "needs the 'write' scope" in refused["detail"]


async def test_deploy_scope_limited_to_deployments(client: Client) -> None:
    for name in ("web", "db"):
        body = {**WEB, "name": name}
        resp = await client.post("/v1/deployments", json=body, headers=bearer(ADMIN))
        assert resp.status == 201
    token = await make_token(client, "ci", "deploy", deployments=["web"])
    assert (await client.post("/v1/deployments/web/stop", headers=bearer(token))).status == 202
    resp = await client.post("/v1/deployments/db/stop", headers=bearer(token))
    assert resp.status == 403
    assert "limited to deployments: web" in (await resp.json())["message"]
    resp = await client.patch("/v1/deployments/web", json={"env": {}}, headers=bearer(token))
    assert (await resp.json())["needed_scope"] == "write"
    entries = await audit(client, deployment="db")
    assert [(e["who"], e["path"], e["status"]) for e in entries] == [
        ("token_file", "/v1/deployments", 201),
        ("token:ci", "/v1/deployments/db/stop", 403),
    ]
    assert {e["path"] for e in await audit(client, who="token:ci")} == {
        "/v1/deployments/web/stop",
        "/v1/deployments/db/stop",
        "/v1/deployments/web",
    }


async def test_write_token_cannot_manage_tokens_or_read_the_audit_log(client: Client) -> None:
    token = await make_token(client, "ops", "write")
    for method, path in (("GET", "/v1/tokens"), ("POST", "/v1/tokens"), ("GET", "/v1/audit")):
        resp = await client.request(method, path, json={}, headers=bearer(token))
        assert resp.status == 403, path
        assert (await resp.json())["needed_scope"] == "admin"
    # Unknown routes fail closed: 403 (admin needed) before any 404.
    resp = await client.get("/v1/nothing-here", headers=bearer(token))
    assert resp.status == 403
    admin = await make_token(client, "root", "admin")
    assert (await client.get("/v1/nothing-here", headers=bearer(admin))).status == 404
    assert (await client.get("/v1/tokens", headers=bearer(admin))).status == 200


async def test_tokens_are_stored_hashed_listed_without_value_and_revoked_at_once(
    client: Client, store: Store
) -> None:
    with capture_logs() as logs:
        token = await make_token(client, "viewer", "read", expires_in="30d")
    assert token not in repr(logs)
    records = await AccessStore(store).list_tokens()
    assert [r.digest for r in records] == [token_digest(token)]
    resp = await client.get("/v1/tokens", headers=bearer(ADMIN))
    listed = (await resp.json())["tokens"]
    assert token not in await resp.text()
    assert listed[0]["name"] == "viewer" and listed[0]["scope"] == "read"
    assert listed[0]["expires_at"] is not None and listed[0]["deployments"] is None
    assert listed[0]["last_used_at"] is None
    assert (await client.get("/v1/deployments", headers=bearer(token))).status == 200
    listed = (await (await client.get("/v1/tokens", headers=bearer(ADMIN))).json())["tokens"]
    assert listed[0]["last_used_at"] is not None
    # A second token of the same name is refused.
    resp = await client.post(
        "/v1/tokens", json={"name": "viewer", "scope": "read"}, headers=bearer(ADMIN)
    )
    assert resp.status == 409
    resp = await client.delete("/v1/tokens/viewer", headers=bearer(ADMIN))
    assert (await resp.json()) == {"revoked": "viewer"}
    resp = await client.get("/v1/deployments", headers=bearer(token))
    assert resp.status == 401
    assert (await client.delete("/v1/tokens/viewer", headers=bearer(ADMIN))).status == 404
    entries = await audit(client, who="anonymous:127.0.0.1")
    assert [(e["method"], e["status"]) for e in entries] == [("GET", 401)]


async def test_an_expired_token_is_refused(client: Client, store: Store) -> None:
    await AccessStore(store).create_token(
        "old", token_digest("patr_expired"), Scope.ADMIN, None, expires_at=time.time() - 1
    )
    resp = await client.get("/v1/deployments", headers=bearer("patr_expired"))
    assert resp.status == 401
    assert "expired" in (await resp.json())["message"]
    resp = await client.get("/v1/deployments", headers=bearer("patr_never-made"))
    assert resp.status == 401
    rows = [(e["who"], e["status"], e["detail"]) for e in await audit(client)]
    assert rows == [
        ("token:old", 401, "expired bearer token"),
        ("anonymous:127.0.0.1", 401, "invalid bearer token"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "read"}, "name"),
        ({"name": "Bad Name", "scope": "read"}, "name"),
        ({"name": "x"}, "scope"),
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "scope": "read", "expires_in": "forever"}, "expires_in"),
        ({"name": "x", "scope": "read", "expires_in": 30}, "expires_in"),
        ({"name": "x", "scope": "deploy", "deployments": []}, "deployments"),
        ({"name": "x", "scope": "deploy", "deployments": ["Web!"]}, "deployments.0"),
        ({"name": "x", "scope": "admin", "deployments": ["web"]}, "deployments"),
        ({"name": "x", "scope": "read", "owner": "me"}, "owner"),
    ],
)
async def test_token_creation_names_the_bad_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/tokens", json=body, headers=bearer(ADMIN))
    assert resp.status == 422
    assert (await resp.json())["field"] == field


async def test_read_tokens_see_secret_names_only(client: Client) -> None:
    secret = {"name": "db-password", "value": "hunter2hunter2"}
    resp = await client.post("/v1/secrets", json=secret, headers=bearer(ADMIN))
    assert resp.status == 201
    full = await (await client.get("/v1/secrets", headers=bearer(ADMIN))).json()
    assert set(full["secrets"][0]) > {"name", "used_by", "version"}
    token = await make_token(client, "viewer", "read")
    deploy = await make_token(client, "ci", "deploy")
    for t in (token, deploy):
        listed = await (await client.get("/v1/secrets", headers=bearer(t))).json()
        assert listed == {"secrets": [{"name": "db-password"}]}
        one = await (await client.get("/v1/secrets/db-password", headers=bearer(t))).json()
        assert one == {"name": "db-password"}
    writer = await make_token(client, "ops", "write")
    one = await (await client.get("/v1/secrets/db-password", headers=bearer(writer))).json()
    assert "used_by" in one


async def test_audit_query_validation_and_bodies_never_stored(client: Client) -> None:
    await client.post(
        "/v1/secrets", json={"name": "api-key", "value": "v3ry-s3cret-value"}, headers=bearer(ADMIN)
    )
    resp = await client.get("/v1/audit", headers=bearer(ADMIN))
    assert "v3ry-s3cret-value" not in await resp.text()
    for query, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"color": "red"}, "color"),
    ):
        resp = await client.get("/v1/audit", params=query, headers=bearer(ADMIN))
        assert resp.status == 400, query
        assert (await resp.json())["field"] == field
    assert len(await audit(client, since="1h")) >= 1
    assert await audit(client, since="2999-01-01T00:00:00Z") == []
    assert len(await audit(client, limit="1")) == 1


async def test_unix_peers_are_admin_and_audited_by_uid(tmp_path: Path, store: Store) -> None:
    sock = tmp_path / "api.sock"
    runner = await serve_api(
        build_app(store, FakeController(), CONFIG, token=None),
        socket_path=sock,
        socket_mode=0o600,
        tcp=None,
    )
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s:
            async with s.post("http://patrd/v1/deployments", json=WEB) as resp:
                assert resp.status == 201
            async with s.get("http://patrd/v1/audit") as resp:
                entries = (await resp.json())["entries"]
    finally:
        await runner.cleanup()
    assert [(e["who"], e["path"], e["deployment"]) for e in entries] == [
        (f"uid:{os.getuid()}", "/v1/deployments", "web")
    ]


async def test_the_audit_log_is_trimmed(store: Store) -> None:
    access = AccessStore(store)
    now = time.time()
    await access.append_audit("old", "POST", "/v1/x", None, 200, now=now - 100 * 86400)
    for i in range(AUDIT_TRIM_EVERY - 1):
        await access.append_audit("new", "POST", "/v1/x", None, 200, now=now + i)
    entries = await access.list_audit(limit=1000)
    assert "old" not in {e.who for e in entries}
    assert len(entries) == AUDIT_TRIM_EVERY - 1


async def test_concurrent_refusals_are_all_audited(client: Client) -> None:
    token = await make_token(client, "viewer", "read")
    answers = await asyncio.gather(
        *(client.delete(f"/v1/deployments/d{i}", headers=bearer(token)) for i in range(20))
    )
    assert {r.status for r in answers} == {403}
    refused = [e for e in await audit(client, who="token:viewer") if e["status"] == 403]
    assert len(refused) == 20
    assert {e["deployment"] for e in refused} == {f"d{i}" for i in range(20)}


def test_config_default_dashboard_scope() -> None:
    assert Config().dashboard.scope == "write"


async def test_refusals_are_batched_and_a_flood_is_bounded(store: Store) -> None:
    access = AccessStore(store)
    buffer = RefusalBuffer(access, flush_s=0.05, max_pending=100)
    with capture_logs() as logs:
        for i in range(250):
            buffer.add(
                AuditRow(time.time(), f"anonymous:10.0.0.{i % 7}", "GET", "/v1/x", None, 401)
            )
        assert buffer.pending == 100
        await asyncio.sleep(0.3)  # the timer flushes
    assert buffer.pending == 0
    entries = await access.list_audit(limit=1000)
    assert len(entries) == 101
    summary = entries[-1]
    assert summary.who == "patrd" and "150 more refused calls were not recorded" in summary.detail
    assert any(e["event"] == "audit.refusals_not_recorded" for e in logs)
    buffer.add(AuditRow(time.time(), "late", "POST", "/v1/y", None, 403))
    await buffer.close()  # the daemon stops: what is queued is written
    assert (await access.list_audit(limit=1))[0].who == "late"
