"""API trust boundaries on a real store: registry_auth binding, capability policy, login info."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.settings.config import Config, DaemonConfig, Listen, RegistryConfig
from patrd.state.store import Store
from tests.support.api_fakes import FakeController

Client = TestClient[web.Request, web.Application]
WEB: dict[str, Any] = {"image": "library/nginx", "tag": "1.25", "ports": {"80": "http"}}


async def client_for(store: Store, config: Config) -> TestClient[web.Request, web.Application]:
    return TestClient(TestServer(build_app(store, FakeController(), config, token=None)))


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async with await client_for(store, Config()) as c:
        yield c


async def create(client: Client, name: str, **extra: Any) -> tuple[int, Any]:
    resp = await client.post("/v1/deployments", json={"name": name, **WEB, **extra})
    return resp.status, await resp.json()


async def test_registry_auth_secret_is_bound_to_its_first_registry(
    client: Client, store: Store
) -> None:
    await store.put_secret("ghcr-cred", b"n" * 12, b"sealed", create=True)
    auth = {"registry_auth": {"secret": "ghcr-cred"}}
    assert (await create(client, "one", registry="ghcr.io", **auth))[0] == 201
    assert (await create(client, "two", registry="ghcr.io", **auth))[0] == 201
    status, err = await create(client, "hub", **auth)  # docker.io
    assert status == 422 and err["field"] == "registry_auth.secret", err
    assert "ghcr.io" in err["message"] and "docker.io" in err["message"]
    assert (await client.get("/v1/deployments/hub")).status == 404
    status, err = await create(client, "loc", registry="local", **auth)
    assert status == 422 and err["field"] == "registry_auth.secret", err

    # a PATCH is checked the same way; a fresh secret binds on its first use there
    assert (await create(client, "plain"))[0] == 201
    resp = await client.patch("/v1/deployments/plain", json=auth)
    assert resp.status == 422 and (await resp.json())["field"] == "registry_auth.secret"
    await store.put_secret("hub-cred", b"n" * 12, b"sealed", create=True)
    resp = await client.patch(
        "/v1/deployments/plain", json={"registry_auth": {"secret": "hub-cred"}}
    )
    assert resp.status == 200, await resp.text()
    status, err = await create(
        client, "three", registry="ghcr.io", registry_auth={"secret": "hub-cred"}
    )
    assert status == 422 and "docker.io" in err["message"], err
    # an env reference is no registry use: no binding, no refusal
    status, _ = await create(client, "envuse", env={"TOKEN": {"secret": "ghcr-cred"}})
    assert status == 201


async def test_policy_applies_to_create_dry_run_and_patch(client: Client) -> None:
    status, err = await create(
        client, "caps", security={"extra_capabilities": ["SETFCAP", "cap_sys_admin"]}
    )
    assert status == 422 and err["field"] == "security.extra_capabilities[1]", err
    resp = await client.post(
        "/v1/deployments?dry_run=true",
        json={"name": "caps", **WEB, "security": {"pids_limit": 0}},
    )
    assert resp.status == 422 and (await resp.json())["field"] == "security.pids_limit"
    status, body = await create(client, "caps", security={"extra_capabilities": ["NET_RAW"]})
    assert status == 201 and body["spec"]["security"]["extra_capabilities"] == ["NET_RAW"]
    resp = await client.patch(
        "/v1/deployments/caps", json={"security": {"extra_capabilities": ["BPF"]}}
    )
    body = await resp.json()
    assert resp.status == 422 and body["field"] == "security.extra_capabilities[0]", body
    assert "never" in body["message"]


async def test_registry_login_info_never_holds_the_password(store: Store, tmp_path: Path) -> None:
    off = Config()
    async with await client_for(store, off) as c:
        assert (await c.get("/v1/registry/login")).status == 404
    on = replace(
        Config(),
        daemon=DaemonConfig(data_dir=tmp_path / "data"),
        registry=RegistryConfig(enabled=True, listen=Listen("127.0.0.1", 5123)),
    )
    async with await client_for(store, on) as c:
        body = await (await c.get("/v1/registry/login")).json()
    assert body == {
        "registry": "127.0.0.1:5123",
        "auth": "generated",
        "username": "patrd",
        "password_file": str(tmp_path / "data" / "registry-password"),
        "login": "docker login 127.0.0.1:5123 --username patrd --password-stdin "
        f"< {tmp_path / 'data' / 'registry-password'}",
    }
    mine = replace(
        on, registry=replace(on.registry, htpasswd_file=tmp_path / "htpasswd", auth=True)
    )
    async with await client_for(store, mine) as c:
        body = await (await c.get("/v1/registry/login")).json()
    assert body["auth"] == "htpasswd_file" and body["password_file"] is None
