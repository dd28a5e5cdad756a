"""``/`` on the TCP listener: the dashboard's address when it is on, a plain 404/401 otherwise."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.dashboard.web import Dashboard
from patrd.settings.config import DashboardConfig
from patrd.state.store import Store
from tests.support.api_fakes import CONFIG, TOKEN, FakeController


async def test_root_redirects_to_the_dashboard(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("correct horse battery\n")
    dashboard = Dashboard(DashboardConfig(enabled=True, admin_password_file=password))
    store = await Store.open(tmp_path / "patrd.db")
    try:
        app = build_app(store, FakeController(), CONFIG, token=TOKEN, dashboard=dashboard)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/", allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"] == "/ui/"
        app = build_app(store, FakeController(), CONFIG, token=TOKEN)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/", allow_redirects=False)
            assert resp.status in (401, 404)  # no dashboard: nothing to send a browser to
    finally:
        await store.close()
