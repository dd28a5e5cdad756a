"""``/v1/urls`` and ``/v1/certificates`` over a real Store and a fake TLS view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.cli.client import UsageError
from patrd.cli.main import parse_args
from patrd.cli.urls import add_body, target_from_args, update_body
from patrd.settings.config import Config, Listen, ProxyConfig, TlsConfig
from patrd.state.store import Store
from patrd.tls.controller import CertStatus
from tests.support.api_fakes import FakeController

CONFIG = Config(
    proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 8080),), base_domain="example.test"),
    tls=TlsConfig(https_listen=(Listen("0.0.0.0", 8443),)),
)
Client = TestClient[web.Request, web.Application]


class FakeTls:
    def status(self, domain: str, now: float | None = None) -> CertStatus:
        return CertStatus(
            domain=domain,
            status="failed",
            issuer="",
            serial="",
            not_before=None,
            not_after=None,
            renew_at=None,
            error="not ordered: x does not resolve",
            failures=1,
            next_attempt_at=1e9,
            attempts=1,
            orders_last_hour=0,
            orders_total=0,
            renewals=0,
            alert=False,
        )

    def statuses(self) -> list[CertStatus]:
        return [self.status("a.example.com")]

    def wake(self) -> None:
        pass


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Client, FakeController]]:
    store = await Store.open(tmp_path / "patrd.db")
    controller = FakeController()
    app = build_app(store, controller, CONFIG, token=None, tls=FakeTls())
    async with TestClient(TestServer(app)) as c:
        yield c, controller
    await store.close()


async def test_url_lifecycle(client: tuple[Client, FakeController]) -> None:
    c, controller = client
    resp = await c.post(
        "/v1/deployments",
        json={"name": "web", "image": "library/nginx", "ports": {"80": "http"}},
    )
    assert resp.status == 201
    body = {"domain": "a.example.com", "target": {"deployment": "web", "port": 80}}
    resp = await c.post("/v1/urls", json=body)
    assert resp.status == 201, await resp.text()
    url: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/v1/urls/{url['id']}"
    assert url["url"] == "https://a.example.com:8443/" and url["http_redirect"] is True
    assert url["tls"] == {
        "status": "failed",
        "error": "not ordered: x does not resolve",
        "expires_at": None,
        "issuer": "",
    }
    assert controller.woken[-1] is None  # a full resync: the routing table changes

    resp = await c.post("/v1/urls", json=body)
    assert resp.status == 409
    resp = await c.post("/v1/urls", json={**body, "path": "bad"})
    assert resp.status == 422 and (await resp.json())["field"] == "path"

    resp = await c.patch(f"/v1/urls/{url['id']}", json={"path": "/app/"})
    assert resp.status == 200 and (await resp.json())["path"] == "/app"
    resp = await c.delete("/v1/deployments/web?confirm=web")
    assert resp.status == 409 and "a.example.com/app" in (await resp.json())["message"]
    resp = await c.get("/v1/urls")
    assert [u["id"] for u in (await resp.json())["urls"]] == [url["id"]]
    resp = await c.delete(f"/v1/urls/{url['id']}")
    assert resp.status == 200
    resp = await c.get(f"/v1/urls/{url['id']}")
    assert resp.status == 404
    resp = await c.delete("/v1/deployments/web?confirm=web")
    assert resp.status == 202


async def test_certificates(client: tuple[Client, FakeController]) -> None:
    c, _ = client
    resp = await c.get("/v1/certificates")
    certs = (await resp.json())["certificates"]
    assert certs[0]["domain"] == "a.example.com" and certs[0]["failures"] == 1
    assert certs[0]["next_attempt_at"].endswith("Z")


def test_cli_bodies() -> None:
    args = parse_args(["url", "add", "a.example.com", "--deployment", "web", "--port", "80"])
    assert add_body(args) == {
        "domain": "a.example.com",
        "target": {"deployment": "web", "port": 80},
    }
    args = parse_args(
        ["url", "add", "a.example.com", "--path", "/x", "--redirect", "https://b", "--temporary"]
    )
    assert add_body(args)["target"] == {"redirect": "https://b", "permanent": False}
    args = parse_args(["url", "update", "id1", "--no-https-redirect"])
    assert update_body(args) == {"http_redirect": False}
    for argv in (
        ["url", "add", "a.example.com"],
        ["url", "add", "a.example.com", "--deployment", "web"],
        ["url", "add", "a.example.com", "--proxy", "http://x", "--redirect", "https://y"],
    ):
        with pytest.raises(UsageError):
            target_from_args(parse_args(argv), required=True)
    with pytest.raises(UsageError):
        update_body(parse_args(["url", "update", "id1"]))
