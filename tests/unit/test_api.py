"""The HTTP API over a real Store (SQLite in tmp_path) and a fake controller."""

from __future__ import annotations

import json
import re
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from patrd import __version__
from patrd.api.app import build_app, serve_api
from patrd.api.errors import ERROR_TABLE, render_patrd_error
from patrd.api.openapi import OPENAPI
from patrd.api.shapes import deployment_urls
from patrd.model.deployment import Intent, Status
from patrd.model.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    EngineError,
    ImageNotFound,
    NotFound,
    PatrdError,
    SpecError,
    StoreError,
)
from patrd.model.spec import parse_create
from patrd.model.views import InstanceView
from patrd.settings.config import ApiConfig, Config, Listen, ProxyConfig
from patrd.state.store import Store
from tests.support.api_fakes import CONFIG, TOKEN, WEB, FakeController, expect_error

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


@pytest.fixture
async def client(
    store: Store, controller: FakeController
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = build_app(store, controller, CONFIG, token=None)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
async def authed(
    store: Store, controller: FakeController
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = build_app(store, controller, CONFIG, token=TOKEN)
    async with TestClient(TestServer(app)) as c:
        yield c


Client = TestClient[web.Request, web.Application]


async def create_web(client: Client, **overrides: Any) -> dict[str, Any]:
    resp = await client.post("/v1/deployments", json={**WEB, **overrides})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def instance(name: str = "web-0", *, ready: bool = True, state: str = "running") -> InstanceView:
    return InstanceView(
        name=name,
        container_id="c0ffee",
        revision=1,
        slot=0,
        state=state,
        ready=ready,
        address="172.18.0.2",
        restarts=0,
    )


# --- health and reads ---------------------------------------------------------


async def test_health(client: Client) -> None:
    resp = await client.get("/v1/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "version": __version__, "problems": []}


async def test_create_returns_deployment_and_wakes(
    client: Client, controller: FakeController
) -> None:
    resp = await client.post("/v1/deployments", json=WEB)
    assert resp.status == 201
    body = await resp.json()
    assert resp.headers["Location"] == "/v1/deployments/web"
    assert set(body) == {
        "id",
        "name",
        "revision",
        "status",
        "status_reason",
        "intent",
        "created_at",
        "updated_at",
        "spec",
        "stable_revision",
        "urls",
        "replicas",
        "estimated_cost",
        "capacity",
    }
    assert body["estimated_cost"] == {"min": 0.0, "max": 0.0, "currency": "USD", "period": "month"}
    assert body["capacity"]["fits"] in (True, False) and body["replicas"] == 1
    assert body["stable_revision"] is None
    assert body["name"] == "web"
    assert body["revision"] == 1
    assert (body["status"], body["intent"], body["status_reason"]) == ("deploying", "run", "")
    assert RFC3339_UTC.match(body["created_at"]) and RFC3339_UTC.match(body["updated_at"])
    assert body["spec"] == parse_create(WEB, region="local").to_json()
    assert body["urls"] == ["http://80-web.example.test:8080"]
    assert controller.woken == [body["id"]]


async def test_create_without_deploy(client: Client) -> None:
    body = await create_web(client, deploy_on_create=False)
    assert (body["status"], body["intent"]) == ("created", "created")


async def test_list_and_get_include_instances(client: Client, controller: FakeController) -> None:
    created = await create_web(client)
    await create_web(client, name="api")
    controller.by_id[created["id"]] = [instance()]

    resp = await client.get("/v1/deployments")
    assert resp.status == 200
    listed = (await resp.json())["deployments"]
    assert [d["name"] for d in listed] == ["api", "web"]
    assert listed[0]["instances"] == []
    assert len(listed[1]["instances"]) == 1

    resp = await client.get("/v1/deployments/web")
    assert resp.status == 200
    got = await resp.json()
    assert got["id"] == created["id"]
    assert got["instances"] == [
        {
            "name": "web-0",
            "container_id": "c0ffee",
            "revision": 1,
            "slot": 0,
            "state": "running",
            "ready": True,
            "address": "172.18.0.2",
            "restarts": 0,
            "current": True,
            "probe": {"phase": "", "last": "", "liveness_failures": 0},
            "waiting_for": "",
        }
    ]


async def test_empty_list(client: Client) -> None:
    resp = await client.get("/v1/deployments")
    assert await resp.json() == {"deployments": []}


async def test_instances_route(client: Client, controller: FakeController) -> None:
    created = await create_web(client)
    controller.by_id[created["id"]] = [instance("web-0"), instance("web-1", ready=False)]
    resp = await client.get("/v1/deployments/web/instances")
    assert resp.status == 200
    got = (await resp.json())["instances"]
    assert [(i["name"], i["ready"]) for i in got] == [("web-0", True), ("web-1", False)]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/deployments/nope",
        "/v1/deployments/nope/instances",
        "/v1/deployments/nope/events",
    ],
)
async def test_unknown_deployment_is_404(client: Client, path: str) -> None:
    body = await expect_error(await client.get(path), 404, "not_found")
    assert "nope" in body["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/v1/deployments/nope"),
        ("POST", "/v1/deployments/nope/start"),
        ("POST", "/v1/deployments/nope/stop"),
        ("DELETE", "/v1/deployments/nope?confirm=nope"),
    ],
)
async def test_writes_to_unknown_deployment_are_404(
    client: Client, controller: FakeController, method: str, path: str
) -> None:
    resp = await client.request(method, path, json={"scale": {"max": 2}})
    await expect_error(resp, 404, "not_found")
    assert controller.woken == []


@pytest.mark.parametrize(
    ("listen_port", "expected"),
    [
        (80, ["http://80-web.example.test", "http://8080-web.example.test"]),
        (8000, ["http://80-web.example.test:8000", "http://8080-web.example.test:8000"]),
    ],
)
def test_deployment_urls(listen_port: int, expected: list[str]) -> None:
    config = Config(
        proxy=ProxyConfig(
            http_listen=(Listen("0.0.0.0", listen_port), Listen("::", 9999)),
            base_domain="example.test",
        )
    )
    spec = parse_create({**WEB, "ports": {"8080": "http", "80": "http"}}, region="local")
    assert deployment_urls(spec, config) == expected


# --- create errors ------------------------------------------------------------


async def test_create_duplicate_is_409(client: Client) -> None:
    await create_web(client)
    resp = await client.post("/v1/deployments", json=WEB)
    body = await expect_error(resp, 409, "conflict")
    assert "already exists" in body["message"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ports": {"70000": "http"}}, "ports.70000"),
        ({"name": "Web"}, "name"),
        ({"tag": "-x"}, "tag"),
        ({"scale": {"min": 0}}, "scale.min"),
        ({"region": "mars"}, "region"),
        ({"replicas": 2}, "replicas"),
    ],
)
async def test_create_invalid_is_422_with_field(
    client: Client, controller: FakeController, overrides: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/deployments", json={**WEB, **overrides})
    await expect_error(resp, 422, "invalid", field)
    assert controller.woken == []
    assert (await (await client.get("/v1/deployments")).json())["deployments"] == []


async def test_create_non_object_body_is_422(client: Client) -> None:
    await expect_error(await client.post("/v1/deployments", json=["web"]), 422, "invalid", "body")


@pytest.mark.parametrize(
    ("data", "content_type", "phrase"),
    [
        (b'{"name": "web",', "application/json", "not valid JSON"),
        (b"{'name': 'web'}", "application/json", "not valid JSON"),
        (b'{"resources": {"cpu": NaN}}', "application/json", "NaN is not a JSON value"),
        (b"\xff\xfe\xfa", "application/json", "UTF-8"),
        (b"", "application/json", "body is required"),
        (b"   ", "application/json", "body is required"),
        (b'{"name": "web"}', "text/plain", "Content-Type must be application/json"),
        (b"name=web", "application/x-www-form-urlencoded", "Content-Type"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", ""),
    ],
)
async def test_malformed_body_is_400(
    store: Store, controller: FakeController, data: bytes, content_type: str, phrase: str
) -> None:
    big = Config(api=ApiConfig(max_body_bytes=1024 * 1024))
    async with TestClient(TestServer(build_app(store, controller, big, token=None))) as c:
        resp = await c.post("/v1/deployments", data=data, headers={"Content-Type": content_type})
        body = await expect_error(resp, 400, "bad_request")
    assert phrase in body["message"]


async def test_missing_content_type_is_400(client: Client) -> None:
    resp = await client.post("/v1/deployments", data=b'{"name": "web"}')
    await expect_error(resp, 400, "bad_request")


async def test_body_over_limit_is_413(client: Client) -> None:
    payload = b'{"name": "' + b"x" * 8192 + b'"}'
    resp = await client.post(
        "/v1/deployments", data=payload, headers={"Content-Type": "application/json"}
    )
    body = await expect_error(resp, 413, "too_large")
    assert "4096" in body["message"]


# --- routing errors -----------------------------------------------------------


async def test_unknown_route_is_json_404(client: Client) -> None:
    body = await expect_error(await client.get("/v2/nothing"), 404, "not_found")
    assert body["message"] == "no such route"


async def test_wrong_method_is_json_405(client: Client) -> None:
    resp = await client.put("/v1/deployments", json={})
    body = await expect_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET,POST"
    assert "PUT" in body["message"]


async def test_head_is_not_served(client: Client) -> None:
    resp = await client.head("/v1/health")
    assert resp.status == 405


# --- update -------------------------------------------------------------------


async def test_patch_creates_revision_and_wakes(client: Client, controller: FakeController) -> None:
    created = await create_web(client)
    controller.woken.clear()
    resp = await client.patch(
        "/v1/deployments/web", json={"scale": {"max": 3}, "env": {"A": "1", "B": "2"}}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["revision"] == 2
    assert body["spec"]["scale"] == {"min": 1, "max": 3, "target_cpu": 80}
    assert body["spec"]["env"] == {"A": "1", "B": "2"}
    assert body["spec"]["tag"] == "1.25"
    assert controller.woken == [created["id"]]


async def test_patch_without_change_keeps_revision(client: Client) -> None:
    await create_web(client)
    resp = await client.patch("/v1/deployments/web", json={"env": {"A": "1"}, "tag": "1.25"})
    assert resp.status == 200
    assert (await resp.json())["revision"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tag": "1.26"}, "tag"),
        ({"image": "library/httpd"}, "image"),
        ({"name": "other"}, "name"),
        ({"ports": {"abc": "http"}}, "ports.abc"),
        ({"scale": {"max": 257}}, "scale.max"),
    ],
)
async def test_patch_invalid_is_422(client: Client, body: dict[str, Any], field: str) -> None:
    await create_web(client)
    await expect_error(await client.patch("/v1/deployments/web", json=body), 422, "invalid", field)
    assert (await (await client.get("/v1/deployments/web")).json())["revision"] == 1


async def test_patch_malformed_body_is_400(client: Client) -> None:
    await create_web(client)
    resp = await client.patch(
        "/v1/deployments/web", data=b"{", headers={"Content-Type": "application/json"}
    )
    await expect_error(resp, 400, "bad_request")


# --- start / stop / delete ------------------------------------------------------


async def test_stop_and_start(client: Client, controller: FakeController) -> None:
    created = await create_web(client)
    controller.woken.clear()

    resp = await client.post("/v1/deployments/web/stop")
    assert resp.status == 202
    body = await resp.json()
    assert (body["intent"], body["status"]) == ("stop", "stopped")

    resp = await client.post("/v1/deployments/web/start")
    assert resp.status == 202
    body = await resp.json()
    assert (body["intent"], body["status"]) == ("run", "deploying")
    assert controller.woken == [created["id"], created["id"]]


async def test_start_a_created_deployment(client: Client) -> None:
    await create_web(client, deploy_on_create=False)
    resp = await client.post("/v1/deployments/web/start")
    assert resp.status == 202
    assert (await resp.json())["intent"] == "run"


@pytest.mark.parametrize(
    ("query", "phrase"),
    [("", "?confirm=web"), ("?confirm=wbe", "does not match"), ("?confirm=", "does not match")],
)
async def test_delete_needs_exact_confirm(
    client: Client, controller: FakeController, query: str, phrase: str
) -> None:
    await create_web(client)
    controller.woken.clear()
    body = await expect_error(
        await client.delete(f"/v1/deployments/web{query}"), 400, "bad_request", "confirm"
    )
    assert phrase in body["message"]
    assert controller.woken == []
    assert (await (await client.get("/v1/deployments/web")).json())["intent"] == "run"


async def test_delete_then_writes_conflict(client: Client, controller: FakeController) -> None:
    created = await create_web(client)
    controller.woken.clear()
    resp = await client.delete("/v1/deployments/web?confirm=web")
    assert resp.status == 202
    body = await resp.json()
    assert (body["intent"], body["status"]) == ("delete", "deleting")
    assert controller.woken == [created["id"]]

    again = await client.delete("/v1/deployments/web?confirm=web")
    assert again.status == 202  # idempotent while the deletion runs

    await expect_error(
        await client.patch("/v1/deployments/web", json={"scale": {"max": 2}}), 409, "conflict"
    )
    await expect_error(await client.post("/v1/deployments/web/start"), 409, "conflict")
    await expect_error(await client.post("/v1/deployments", json=WEB), 409, "conflict")


async def test_deleted_and_purged_is_404(client: Client, store: Store) -> None:
    created = await create_web(client)
    await client.delete("/v1/deployments/web?confirm=web")
    await store.purge(created["id"])
    await expect_error(await client.get("/v1/deployments/web"), 404, "not_found")


# --- events -------------------------------------------------------------------


async def test_events_paging(client: Client, store: Store) -> None:
    created = await create_web(client)
    await store.set_status(created["id"], Status.RUNNING)
    await store.add_event(created["id"], "pull", "pulled library/nginx:1.25", 1)

    resp = await client.get("/v1/deployments/web/events")
    assert resp.status == 200
    events = (await resp.json())["events"]
    assert [e["kind"] for e in events] == ["created", "status", "pull"]
    assert set(events[0]) == {"id", "at", "kind", "message", "revision"}
    assert all(RFC3339_UTC.match(e["at"]) for e in events)
    assert events[1]["message"] == "status running"

    after = events[0]["id"]
    resp = await client.get(f"/v1/deployments/web/events?after={after}&limit=1")
    assert [e["kind"] for e in (await resp.json())["events"]] == ["status"], "no gap after"
    resp = await client.get("/v1/deployments/web/events?limit=1")
    assert [e["kind"] for e in (await resp.json())["events"]] == ["pull"], "newest without after"

    resp = await client.get(f"/v1/deployments/web/events?after={events[-1]['id']}")
    assert (await resp.json())["events"] == []

    await client.post("/v1/deployments/web/stop")
    resp = await client.get(f"/v1/deployments/web/events?after={events[-1]['id']}&limit=1000")
    (stop,) = (await resp.json())["events"]
    assert (stop["kind"], stop["revision"]) == ("stop", None)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("after=1.5", "after"),
        ("after=", "after"),
        ("after=1&after=2", "after"),
        ("after=" + "9" * 30, "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ],
)
async def test_events_bad_query_is_400(client: Client, query: str, field: str) -> None:
    await create_web(client)
    body = await expect_error(
        await client.get(f"/v1/deployments/web/events?{query}"), 400, "bad_request", field
    )
    assert field in body["message"]


# --- server-side failures ---------------------------------------------------------


async def test_unexpected_error_is_500_without_details(
    client: Client, controller: FakeController
) -> None:
    await create_web(client)
    controller.fail_with = RuntimeError("secret detail /etc/shadow")
    with capture_logs() as logs:
        resp = await client.get("/v1/deployments/web")
    body = await expect_error(resp, 500, "internal")
    assert body["message"] == "internal error (see daemon log)"
    assert "secret" not in await resp.text()
    (entry,) = [e for e in logs if e["event"] == "api.internal_error"]
    assert entry["log_level"] == "error"
    assert (entry["method"], entry["path"]) == ("GET", "/v1/deployments/web")
    assert entry["exc_info"] is True


async def test_engine_error_is_503(client: Client, controller: FakeController) -> None:
    await create_web(client)
    controller.fail_with = EngineError("docker is not answering")
    body = await expect_error(await client.get("/v1/deployments"), 503, "engine_unavailable")
    assert body["message"] == "docker is not answering"


async def test_store_error_is_503(
    client: Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise StoreError("database unavailable: disk I/O error")

    monkeypatch.setattr(store, "list_deployments", broken)
    await expect_error(await client.get("/v1/deployments"), 503, "store_unavailable")


@pytest.mark.parametrize(
    ("exc", "status", "code", "field"),
    [
        (SpecError("ports.1", "bad"), 422, "invalid", "ports.1"),
        (BadRequest("bad", field="limit"), 400, "bad_request", "limit"),
        (BadRequest("bad"), 400, "bad_request", None),
        (NotFound("gone"), 404, "not_found", None),
        (Conflict("busy"), 409, "conflict", None),
        (StoreError("down"), 503, "store_unavailable", None),
        (EngineError("down"), 503, "engine_unavailable", None),
        (ImageNotFound("no such image"), 503, "engine_unavailable", None),
    ],
)
def test_error_table(exc: PatrdError, status: int, code: str, field: str | None) -> None:
    resp = render_patrd_error(exc)
    assert resp is not None
    assert resp.status == status
    assert resp.text is not None
    body = json.loads(resp.text)
    assert body["error"] == code
    assert body.get("field") == field


def test_error_table_has_no_row_for_config_errors() -> None:
    assert ConfigError not in ERROR_TABLE
    assert render_patrd_error(ConfigError("k", "v")) is None


# --- auth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "phrase"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
        ({"Authorization": "Bearer wrong"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid bearer token"),
        ({"Authorization": "Bearer s3cret-tökén"}, "invalid bearer token"),
    ],
)
async def test_auth_refuses(authed: Client, headers: dict[str, str], phrase: str) -> None:
    resp = await authed.get("/v1/deployments", headers=headers)
    body = await expect_error(resp, 401, "unauthorized")
    assert phrase in body["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_auth_accepts_token(authed: Client) -> None:
    for scheme in ("Bearer", "bearer"):
        resp = await authed.get("/v1/deployments", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert resp.status == 200


async def test_auth_guards_unknown_routes_and_writes(authed: Client) -> None:
    await expect_error(await authed.get("/v2/secret"), 401, "unauthorized")
    await expect_error(await authed.post("/v1/deployments", json=WEB), 401, "unauthorized")
    await expect_error(await authed.get("/v1/openapi.json"), 401, "unauthorized")


async def test_health_needs_no_token(authed: Client) -> None:
    resp = await authed.get("/v1/health")
    assert resp.status == 200


def test_empty_token_is_refused(store: Store, controller: FakeController) -> None:
    with pytest.raises(ValueError, match="empty"):
        build_app(store, controller, CONFIG, token="")


# --- serving on a unix socket and TCP -----------------------------------------------


async def test_serve_api_unix_and_tcp(
    tmp_path: Path, store: Store, controller: FakeController
) -> None:
    sock_path = tmp_path / "run" / "api.sock"
    app = build_app(store, controller, CONFIG, token=TOKEN)
    runner = await serve_api(app, socket_path=sock_path, socket_mode=0o660, tcp=("127.0.0.1", 0))
    try:
        assert stat.S_ISSOCK(sock_path.lstat().st_mode)
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
        tcp_port = next(a[1] for a in runner.addresses if isinstance(a, tuple))

        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(sock_path))
        ) as session:
            # Unix peers are trusted: the socket's file mode is the authentication.
            async with session.get("http://patrd/v1/deployments") as resp:
                assert resp.status == 200

        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{tcp_port}"
            async with session.get(f"{base}/v1/deployments") as resp:
                assert resp.status == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(f"{base}/v1/deployments", headers=headers) as resp:
                assert resp.status == 200
            async with session.get(f"{base}/v1/health") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_serve_api_replaces_stale_socket(
    tmp_path: Path, store: Store, controller: FakeController
) -> None:
    sock_path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays; nobody listens
    app = build_app(store, controller, CONFIG, token=None)
    runner = await serve_api(app, socket_path=sock_path, socket_mode=0o600, tcp=None)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(sock_path))
        ) as session:
            async with session.get("http://patrd/v1/health") as resp:
                assert resp.status == 200
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    finally:
        await runner.cleanup()


async def test_serve_api_refuses_live_socket(
    tmp_path: Path, store: Store, controller: FakeController
) -> None:
    sock_path = tmp_path / "api.sock"
    first = await serve_api(
        build_app(store, controller, CONFIG, token=None),
        socket_path=sock_path,
        socket_mode=0o600,
        tcp=None,
    )
    try:
        with pytest.raises(ConfigError, match="already serving"):
            await serve_api(
                build_app(store, controller, CONFIG, token=None),
                socket_path=sock_path,
                socket_mode=0o600,
                tcp=None,
            )
    finally:
        await first.cleanup()


async def test_serve_api_refuses_regular_file(
    tmp_path: Path, store: Store, controller: FakeController
) -> None:
    path = tmp_path / "api.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        await serve_api(
            build_app(store, controller, CONFIG, token=None),
            socket_path=path,
            socket_mode=0o600,
            tcp=None,
        )
    assert path.read_text() == "precious"


# --- the OpenAPI document ---------------------------------------------------------


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def openapi_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_openapi_matches_router_both_ways(store: Store, controller: FakeController) -> None:
    app = build_app(store, controller, CONFIG, token=None)
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = openapi_operations(OPENAPI)
    assert routed == documented
    assert ("POST", "/v1/deployments") in routed and len(routed) >= 11


def test_openapi_refs_resolve() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    all_refs = refs(OPENAPI)
    assert all_refs
    for ref in all_refs:
        node: Any = OPENAPI
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)


def test_openapi_every_operation_documents_errors_and_ids() -> None:
    ids = []
    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            ids.append(op["operationId"])
            codes = set(op["responses"])
            assert any(c.startswith("2") or c == "101" for c in codes), (method, path)
            if path != "/v1/health":
                assert {"401", "500"} <= codes, (method, path)
            if "{name}" in path:
                assert "404" in codes, (method, path)
    assert len(ids) == len(set(ids))


async def test_openapi_is_served(client: Client) -> None:
    resp = await client.get("/v1/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.0")
    assert openapi_operations(document) == openapi_operations(OPENAPI)


async def test_intent_enum_in_openapi_matches_store() -> None:
    schema = OPENAPI["components"]["schemas"]["Deployment"]["properties"]
    assert schema["intent"]["enum"] == [i.value for i in Intent]
    assert schema["status"]["enum"] == [s.value for s in Status]


async def test_serve_api_tcp_only(store: Store, controller: FakeController) -> None:
    app = build_app(store, controller, CONFIG, token=TOKEN)
    runner = await serve_api(app, socket_path=None, socket_mode=0o600, tcp=("127.0.0.1", 0))
    try:
        (address,) = runner.addresses
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{address[1]}/v1/deployments"
            async with session.get(url) as resp:
                assert resp.status == 401
    finally:
        await runner.cleanup()


async def test_serve_api_needs_somewhere_to_listen(
    store: Store, controller: FakeController
) -> None:
    with pytest.raises(ValueError, match="socket path"):
        await serve_api(
            build_app(store, controller, CONFIG, token=None),
            socket_path=None,
            socket_mode=0o600,
            tcp=None,
        )


async def test_list_pages_by_name_with_a_next_cursor(client: Client) -> None:
    for name in ("cc", "aa", "ee", "bb", "dd"):
        await create_web(client, name=name)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while pages < 10:  # bounded: 5 deployments, 2 a page
        query = "?limit=2" + (f"&after={after}" if after else "")
        resp = await client.get("/v1/deployments" + query)
        assert resp.status == 200
        body = await resp.json()
        assert len(body["deployments"]) <= 2
        seen += [d["name"] for d in body["deployments"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == ["aa", "bb", "cc", "dd", "ee"]
    assert pages == 3
    # An exact fit: no empty extra page.
    body = await (await client.get("/v1/deployments?limit=5")).json()
    assert [d["name"] for d in body["deployments"]] == seen
    assert body["next"] is None
    # Unpaged: everything, and no cursor (the answer stays as it was).
    body = await (await client.get("/v1/deployments")).json()
    assert [d["name"] for d in body["deployments"]] == seen
    assert "next" not in body


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "limit=1&limit=2"])
async def test_list_page_limit_is_checked(client: Client, query: str) -> None:
    await expect_error(await client.get(f"/v1/deployments?{query}"), 400, "bad_request", "limit")
