"""The dashboard's HTTP side over the real API app (a Store in tmp_path, a fake controller)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.dashboard.web import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Dashboard,
    PasswordFileError,
    load_assets,
)
from patrd.model.errors import ConfigError
from patrd.settings.config import DashboardConfig, parse
from patrd.state.store import Store
from tests.support.api_fakes import CONFIG, TOKEN, WEB, FakeController
from tests.support.dashboard_login import PASSWORD, Client, Clock, cookies_of, login, session


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dashboard(password_file: Path, clock: Clock) -> Dashboard:
    config = DashboardConfig(
        enabled=True,
        admin_password_file=password_file,
        session_ttl_s=3600,
        idle_timeout_s=600,
        login_attempts_per_minute=5,
    )
    return Dashboard(config, clock=clock)


@pytest.fixture
async def client(store: Store, dashboard: Dashboard) -> AsyncIterator[Client]:
    app = build_app(store, FakeController(), CONFIG, token=TOKEN, dashboard=dashboard)
    async with TestClient(TestServer(app)) as c:
        yield c


# --- pages and login --------------------------------------------------------------


async def test_without_a_session_the_app_redirects_to_login(client: Client) -> None:
    for path in ("/ui/", "/ui"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 302
    resp = await client.get("/ui/", allow_redirects=False)
    assert resp.headers["Location"] == "/ui/login"
    resp = await client.get("/ui/login")
    assert resp.status == 200
    page = await resp.text()
    assert 'action="/ui/login"' in page and 'type="password"' in page


async def test_pages_carry_a_strict_csp_and_no_inline_script(client: Client) -> None:
    cookie, _ = await session(client)
    for path, headers in (("/ui/login", {}), ("/ui/", {"Cookie": cookie})):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
        page = await resp.text()
        for tag in re.findall(r"<script[^>]*>", page):
            assert "src=" in tag, tag
        assert "style=" not in page and "<style" not in page
    # The API's answers say the same about framing and sniffing.
    resp = await client.get("/v1/health")
    assert resp.headers["X-Frame-Options"] == "DENY"


def test_no_static_file_has_inline_handlers_or_html_injection() -> None:
    assets = load_assets()
    assert {"index.html", "login.html", "app.js", "style.css"} <= assets.keys()
    for name, asset in assets.items():
        text = asset.body.decode()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
        assert "eval(" not in text and "document.write" not in text, name
        if name.endswith(".html"):
            assert not re.search(r"\son[a-z]+=", text), name


async def test_login_sets_secure_httponly_strict_cookies(client: Client) -> None:
    resp = await login(client)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"
    got = cookies_of(resp)
    session_cookie, csrf_cookie = got[SESSION_COOKIE], got[CSRF_COOKIE]
    for morsel in (session_cookie, csrf_cookie):
        assert morsel["secure"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        assert morsel["max-age"] == "3600"
        assert not morsel["domain"]
    assert session_cookie["httponly"]
    assert not csrf_cookie["httponly"]  # the page's script sends it back as a header
    assert session_cookie.value != csrf_cookie.value


async def test_wrong_password_401_then_429_after_five(client: Client, clock: Clock) -> None:
    for _ in range(5):
        resp = await login(client, "wrong password!")
        assert resp.status == 401
        assert "Wrong password" in await resp.text()
        assert SESSION_COOKIE not in cookies_of(resp)
    resp = await login(client, PASSWORD)  # limited: not even the right one is checked
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    assert "Too many failed logins" in await resp.text()
    clock.now += 61
    assert (await login(client, PASSWORD)).status == 303


async def test_cross_origin_login_is_refused(client: Client) -> None:
    resp = await login(client, Origin="http://evil.example")
    assert resp.status == 403
    resp = await login(client, Origin="null")
    assert resp.status == 403
    host = f"{client.server.host}:{client.server.port}"
    resp = await login(client, Origin=f"http://{host}")
    assert resp.status == 303


async def test_the_password_file_is_read_again_and_a_change_logs_everyone_out(
    client: Client, password_file: Path
) -> None:
    cookie, _ = await session(client)
    password_file.write_text("a brand new password\n")
    assert (await login(client, PASSWORD)).status == 401
    resp = await client.get("/v1/deployments", headers={"Cookie": cookie})
    assert resp.status == 401
    assert (await login(client, "a brand new password")).status == 303


def test_the_dashboard_refuses_a_short_or_missing_password(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    for path in (short, tmp_path / "missing"):
        with pytest.raises(PasswordFileError):
            Dashboard(DashboardConfig(enabled=True, admin_password_file=path))


def test_config_needs_the_tcp_listener_and_a_password_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin_password_file"):
        parse(
            {
                "api": {"tcp_listen": "127.0.0.1:7070", "token_file": "t"},
                "dashboard": {"enabled": True},
            },
            base_dir=tmp_path,
        )
    with pytest.raises(ConfigError, match="tcp_listen"):
        parse({"dashboard": {"enabled": True, "admin_password_file": "pw"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"dashboard\.colour"):
        parse({"dashboard": {"colour": "blue"}}, base_dir=tmp_path)
    config = parse(
        {
            "api": {"tcp_listen": "127.0.0.1:7070", "token_file": "t"},
            "dashboard": {"enabled": True, "admin_password_file": "pw", "idle_timeout_s": 60},
        },
        base_dir=tmp_path,
    )
    assert config.dashboard.admin_password_file == tmp_path / "pw"
    assert config.dashboard.idle_timeout_s == 60
    assert parse({}, base_dir=tmp_path).dashboard.enabled is False


# --- the API with a session ---------------------------------------------------------


async def test_reads_need_the_session_and_writes_the_csrf_token_too(client: Client) -> None:
    cookie, csrf = await session(client)
    resp = await client.get("/v1/deployments", headers={"Cookie": cookie})
    assert resp.status == 200
    for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": "wrong"}):
        resp = await client.post("/v1/deployments", json=WEB, headers=headers)
        assert resp.status == 403
        body = await resp.json()
        assert body["error"] == "forbidden" and "X-CSRF-Token" in body["message"]
    resp = await client.post(
        "/v1/deployments", json=WEB, headers={"Cookie": cookie, "X-CSRF-Token": csrf}
    )
    assert resp.status == 201, await resp.text()
    # Unknown or expired sessions are 401, like a missing token.
    resp = await client.get("/v1/deployments", headers={"Cookie": f"{SESSION_COOKIE}=forged"})
    assert resp.status == 401
    # The bearer token still works, and wins over a cookie.
    resp = await client.get(
        "/v1/deployments",
        headers={"Authorization": f"Bearer {TOKEN}", "Cookie": f"{SESSION_COOKIE}=forged"},
    )
    assert resp.status == 200


async def test_sessions_expire_when_idle(client: Client, clock: Clock) -> None:
    cookie, _ = await session(client)
    clock.now += 599
    assert (await client.get("/v1/deployments", headers={"Cookie": cookie})).status == 200
    clock.now += 599
    assert (await client.get("/ui/", headers={"Cookie": cookie})).status == 200
    clock.now += 601
    assert (await client.get("/v1/deployments", headers={"Cookie": cookie})).status == 401
    resp = await client.get("/ui/", headers={"Cookie": cookie}, allow_redirects=False)
    assert resp.status == 302


async def test_logout_needs_the_csrf_token_and_ends_the_session(client: Client) -> None:
    cookie, csrf = await session(client)
    resp = await client.post("/ui/logout", headers={"Cookie": cookie}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post(
        "/ui/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login")
    cleared = cookies_of(resp)
    assert cleared[SESSION_COOKIE].value == "" and cleared[SESSION_COOKIE]["max-age"] == "0"
    assert (await client.get("/v1/deployments", headers={"Cookie": cookie})).status == 401


async def test_static_files_have_etags_and_no_directory_escape(client: Client) -> None:
    resp = await client.get("/ui/static/app.js")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/javascript")
    etag = resp.headers["ETag"]
    resp = await client.get("/ui/static/app.js", headers={"If-None-Match": etag})
    assert resp.status == 304
    for path in ("/ui/static/..%2f..%2fweb.py", "/ui/static/index.html", "/ui/static/nope.js"):
        assert (await client.get(path)).status == 404, path


# --- the dry run the create form uses -------------------------------------------------


async def test_dry_run_validates_and_prices_without_storing(client: Client) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {**WEB, "resources": {"cpu": 0.5, "memory_mb": 256}, "scale": {"min": 1, "max": 3}}
    resp = await client.post("/v1/deployments?dry_run=true", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    preview = await resp.json()
    assert preview["dry_run"] is True and preview["spec"]["resources"]["cpu"] == 0.5
    assert preview["estimated_cost"]["currency"] == "USD"
    assert preview["capacity"]["required"]["cpu"] == 1.5
    assert (await client.get("/v1/deployments/web", headers=headers)).status == 404
    bad = {**WEB, "ports": {"99999": "http"}}
    resp = await client.post("/v1/deployments?dry_run=true", json=bad, headers=headers)
    assert resp.status == 422 and (await resp.json())["field"] == "ports.99999"
    missing = {**WEB, "env": {"DB": {"secret": "nope"}}}
    resp = await client.post("/v1/deployments?dry_run=true", json=missing, headers=headers)
    assert resp.status == 422 and (await resp.json())["field"] == "env.DB.secret"
    assert (await client.post("/v1/deployments", json=WEB, headers=headers)).status == 201
    resp = await client.post("/v1/deployments?dry_run=1", json=WEB, headers=headers)
    assert resp.status == 409
