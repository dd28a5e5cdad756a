"""The dashboard's scope on /v1 and its login limiter under concurrent attempts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.dashboard.web import Dashboard
from patrd.model.errors import ConfigError
from patrd.settings.config import DashboardConfig, parse
from patrd.state.store import Store
from tests.support.api_fakes import CONFIG, TOKEN, WEB, FakeController
from tests.support.dashboard_login import PASSWORD, Clock, login, session

Client = TestClient[web.Request, web.Application]


def dashboard_with(tmp_path: Path, scope: str = "write", attempts: int = 5) -> Dashboard:
    password_file = tmp_path / "admin-password"
    password_file.write_text(PASSWORD + "\n")
    config = DashboardConfig(
        enabled=True,
        admin_password_file=password_file,
        login_attempts_per_minute=attempts,
        scope=scope,
    )
    return Dashboard(config, clock=Clock())


async def serve(store: Store, dashboard: Dashboard) -> TestClient[web.Request, web.Application]:
    app = build_app(store, FakeController(), CONFIG, token=TOKEN, dashboard=dashboard)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_the_session_acts_with_write_by_default(store: Store, tmp_path: Path) -> None:
    client = await serve(store, dashboard_with(tmp_path))
    try:
        cookie, csrf = await session(client)
        headers = {"Cookie": cookie, "X-CSRF-Token": csrf}
        assert (await client.post("/v1/deployments", json=WEB, headers=headers)).status == 201
        resp = await client.post("/v1/tokens", json={"name": "x", "scope": "read"}, headers=headers)
        assert resp.status == 403
        assert (await resp.json())["needed_scope"] == "admin"
        resp = await client.get("/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"})
        rows = [(e["who"], e["path"], e["status"]) for e in (await resp.json())["entries"]]
        assert rows == [
            ("dashboard:127.0.0.1", "/v1/deployments", 201),
            ("dashboard:127.0.0.1", "/v1/tokens", 403),
        ]
    finally:
        await client.close()


async def test_a_read_only_dashboard(store: Store, tmp_path: Path) -> None:
    client = await serve(store, dashboard_with(tmp_path, scope="read"))
    try:
        cookie, csrf = await session(client)
        headers = {"Cookie": cookie, "X-CSRF-Token": csrf}
        assert (await client.get("/v1/deployments", headers=headers)).status == 200
        resp = await client.post("/v1/deployments", json=WEB, headers=headers)
        assert resp.status == 403
        assert (await resp.json())["needed_scope"] == "write"
    finally:
        await client.close()


async def test_concurrent_logins_cannot_race_past_the_limit(store: Store, tmp_path: Path) -> None:
    """Each attempt is reserved before the handler awaits (the body, the password file)."""
    client = await serve(store, dashboard_with(tmp_path, attempts=5))
    try:
        answers = await asyncio.gather(*(login(client, "wrong password!") for _ in range(30)))
        statuses = sorted(r.status for r in answers)
        assert statuses.count(401) == 5
        assert statuses.count(429) == 25
        # Another client is not locked out by them (no global cap).
        other = await login(client, PASSWORD, **{"X-Forwarded-For": "192.0.2.7"})
        assert other.status == 303
    finally:
        await client.close()


def test_dashboard_scope_config(tmp_path: Path) -> None:
    base = {"api": {"tcp_listen": "127.0.0.1:7070", "token_file": "t"}}
    with pytest.raises(ConfigError, match=r"dashboard\.scope"):
        parse({**base, "dashboard": {"scope": "root"}}, base_dir=tmp_path)
    config = parse({**base, "dashboard": {"scope": "deploy"}}, base_dir=tmp_path)
    assert config.dashboard.scope == "deploy"
