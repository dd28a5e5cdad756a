"""``/v1/notifications`` and ``/v1/node`` through the aiohttp app (no daemon, no receivers)."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.cli.notify import cmd_node, target_body
from patrd.notify.config import NodeConfig
from patrd.notify.dispatcher import Dispatcher, DispatchOptions
from patrd.notify.targets import parse_target
from patrd.observe.nodehealth import NodeWatcher
from patrd.state.store import Store
from tests.support.api_fakes import CONFIG, FakeController, expect_error

Client = TestClient[web.Request, web.Application]

CONFIGURED = parse_target(
    {"name": "from-file", "type": "slack", "url": "http://127.0.0.1:9/", "events": ["*"]}
)
HOOK: dict[str, Any] = {
    "name": "ops",
    "type": "webhook",
    "url": "https://hooks.example/patrd",
    "events": ["rollout.failed", "certificate.*"],
    "secret": "hook-key",
}


@pytest.fixture
async def dispatcher(store: Store) -> Dispatcher:
    return Dispatcher(store, [CONFIGURED], None, DispatchOptions(node="n1"))


@pytest.fixture
async def client(store: Store, dispatcher: Dispatcher, tmp_path: Path) -> AsyncIterator[Client]:
    watcher = NodeWatcher(store, NodeConfig(docker_root=tmp_path / "nope"), tmp_path)
    app = build_app(store, FakeController(), CONFIG, token=None, notify=dispatcher, node=watcher)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_create_list_delete_runtime_target(client: Client, dispatcher: Dispatcher) -> None:
    resp = await client.post("/v1/notifications", json=HOOK)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["source"] == "api" and created["secret"] == "hook-key"
    assert created["sent"] == 0 and created["events"] == ["rollout.failed", "certificate.*"]
    listed = await (await client.get("/v1/notifications")).json()
    assert [(t["name"], t["source"]) for t in listed["notifications"]] == [
        ("from-file", "config"),
        ("ops", "api"),
    ]
    assert "rollout.failed" in listed["kinds"] and listed["dropped"] == 0
    slack = {"name": "chat", "type": "slack", "url": "https://hooks.example/services/T0/B0/tok3n"}
    resp = await client.post("/v1/notifications", json=slack)
    shown = json.dumps(await resp.json())
    assert resp.status == 201 and "tok3n" not in shown
    listed = await (await client.get("/v1/notifications")).json()
    assert "tok3n" not in json.dumps(listed)
    assert [t["url"] for t in listed["notifications"] if t["name"] == "chat"] == [
        "https://hooks.example/…"
    ]
    assert (await client.delete("/v1/notifications/chat")).status == 204
    assert [t.name for t in dispatcher.targets()] == ["from-file", "ops"]
    await expect_error(await client.post("/v1/notifications", json=HOOK), 409, "conflict")
    clash = {**HOOK, "name": "from-file"}
    await expect_error(await client.post("/v1/notifications", json=clash), 409, "conflict")
    await client.post("/v1/notifications/ops/test")
    assert dispatcher.stats.queued == 1
    resp = await client.delete("/v1/notifications/ops")
    assert resp.status == 204
    assert dispatcher.stats.queued == 0  # its queue went with it
    assert [t.name for t in dispatcher.targets()] == ["from-file"]
    await expect_error(await client.delete("/v1/notifications/ops"), 404, "not_found")
    await expect_error(await client.delete("/v1/notifications/from-file"), 409, "conflict")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HOOK, "events": ["rollout.nope"]}, "events[0]"),
        ({**HOOK, "url": "file:///etc/passwd"}, "url"),
        ({**HOOK, "secret": "not a name"}, "secret"),
        ({**HOOK, "type": "sms"}, "type"),
        ({**HOOK, "password_secret": "x"}, "password_secret"),
        ({k: v for k, v in HOOK.items() if k != "name"}, "name"),
        ([HOOK], "body"),
    ],
)
async def test_invalid_targets_name_the_field(client: Client, body: Any, field: str) -> None:
    await expect_error(await client.post("/v1/notifications", json=body), 422, "invalid", field)


async def test_test_notification_is_queued_for_that_target_only(
    client: Client, dispatcher: Dispatcher
) -> None:
    resp = await client.post("/v1/notifications/from-file/test")
    assert resp.status == 202
    assert dispatcher.stats.queued == 1
    await expect_error(await client.post("/v1/notifications/nope/test"), 404, "not_found")


async def test_node_reading_and_events(client: Client, store: Store, tmp_path: Path) -> None:
    await store.add_node_event("disk.low", "data: 3% free")
    resp = await client.get("/v1/node")
    assert resp.status == 200
    node = await resp.json()
    assert [d["label"] for d in node["disks"]] == ["data"]
    assert node["missing"] == [str(tmp_path / "nope")]
    assert node["memory"]["total"] > 0 and node["cpu"]["count"] >= 1
    assert [(e["kind"], e["message"]) for e in node["events"]] == [("disk.low", "data: 3% free")]
    none = await (await client.get("/v1/node?events=0")).json()
    assert none["events"] == []
    await expect_error(await client.get("/v1/node?events=-1"), 400, "bad_request", "events")


async def test_without_the_parts_the_routes_answer_503(store: Store) -> None:
    app = build_app(store, FakeController(), CONFIG, token=None)
    async with TestClient(TestServer(app)) as c:
        for method, path in (("GET", "/v1/notifications"), ("GET", "/v1/node")):
            resp = await c.request(method, path)
            assert resp.status == 503


def test_cli_notify_add_body() -> None:
    args = argparse.Namespace(
        name="mail",
        type="email",
        events=["disk.low,memory.pressure", "backup.*"],
        to_url=None,
        url_secret=None,
        secret=None,
        timeout=None,
        smtp_host="smtp.example.org",
        smtp_port=587,
        starttls=True,
        username="patrd",
        password_secret="smtp-pass",
        mail_from="patrd@example.org",
        mail_to=["ops@example.org"],
    )
    body = target_body(args)
    assert body == {
        "name": "mail",
        "type": "email",
        "events": ["disk.low", "memory.pressure", "backup.*"],
        "smtp_host": "smtp.example.org",
        "smtp_port": 587,
        "starttls": True,
        "username": "patrd",
        "password_secret": "smtp-pass",
        "mail_from": "patrd@example.org",
        "mail_to": ["ops@example.org"],
    }
    assert parse_target(json.loads(json.dumps(body))).smtp_port == 587


async def test_patrctl_node_text(
    client: Client, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.add_node_event("memory.pressure", "3.0% of memory available")
    node = await (await client.get("/v1/node")).json()

    class Answers:
        def get(self, path: str, **query: Any) -> Any:
            assert path == "/v1/node" and query == {"events": 10}
            return node

    assert cmd_node(Answers(), argparse.Namespace(json=False, events=10)) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert f"of {node['cpu']['count']} cores" in out
    assert "DISK" in out and "data" in out and "memory.pressure" in out
    assert "(not found: " in out  # the docker root this test points at does not exist
