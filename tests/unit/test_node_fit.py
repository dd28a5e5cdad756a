"""What the node can never run (422 at the API) and when a change over-commits it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.api.capacity import this_node
from patrd.model.errors import SpecError
from patrd.model.views import InstanceView
from patrd.observe.cost import Node
from patrd.observe.node_fit import Load, overcommit_warning, refuse_impossible
from patrd.settings.config import Config
from patrd.state.store import Store

WEB: dict[str, Any] = {"name": "web", "image": "library/nginx", "ports": {"80": "http"}}
Client = TestClient[web.Request, web.Application]


class Controller:
    def __init__(self) -> None:
        self.by_id: dict[str, list[InstanceView]] = {}

    def wake(self, deployment_id: str | None = None) -> None:
        pass

    def instances(self, deployment_id: str) -> list[InstanceView]:
        return list(self.by_id.get(deployment_id, []))

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Client, Controller]]:
    store = await Store.open(tmp_path / "patrd.db")
    controller = Controller()
    app = build_app(store, controller, Config(), token=None)
    async with TestClient(TestServer(app)) as client:
        yield client, controller
    await store.close()


def running(slot: int) -> InstanceView:
    return InstanceView(f"x-{slot}", f"c{slot}", 1, slot, "running", True, None, 0)


# --- pure -------------------------------------------------------------------


def test_refuse_impossible_names_field_and_node_figure() -> None:
    node = Node(cpus=2.0, memory_mb=4000)
    refuse_impossible(2.0, 4000, node)  # exactly the node: allowed
    with pytest.raises(SpecError) as cpu:
        refuse_impossible(8.0, 512, node)
    assert cpu.value.field == "resources.cpu"
    assert "this node has 2 CPUs" in cpu.value.message and "asked for 8" in cpu.value.message
    with pytest.raises(SpecError) as mem:
        refuse_impossible(1.0, 8000, node)
    assert mem.value.field == "resources.memory_mb"
    assert "4000 MB" in mem.value.message


def test_warning_only_when_this_change_overcommits() -> None:
    node = Node(cpus=2.0, memory_mb=4000)
    assert overcommit_warning(Load(1, 1000), Load(2, 2000), node) is None  # still fits
    text = overcommit_warning(Load(1, 1000), Load(3, 2000), node)
    assert text is not None and "3 of 2 CPUs" in text and "scale" not in text
    assert "memory" not in text
    # already over before: not repeated on every command
    assert overcommit_warning(Load(3, 1000), Load(4, 1000), node) is None
    both = overcommit_warning(Load(), Load(3, 5000), node)
    assert both is not None and "5000 of 4000 MB of memory" in both


# --- the API ------------------------------------------------------------------


async def test_create_refuses_more_cpu_than_the_node_has(api: tuple[Client, Controller]) -> None:
    client, _ = api
    node = this_node()
    too_many = node.cpus + 1
    resp = await client.post("/v1/deployments", json={**WEB, "resources": {"cpu": too_many}})
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["field"] == "resources.cpu"
    assert f"this node has {node.cpus:g} CPUs" in body["message"]
    # nothing was stored
    assert (await client.get("/v1/deployments/web")).status == 404
    # the dry run refuses it the same way
    resp = await client.post(
        "/v1/deployments?dry_run=true", json={**WEB, "resources": {"cpu": too_many}}
    )
    assert resp.status == 422 and (await resp.json())["field"] == "resources.cpu"


async def test_create_and_update_refuse_more_memory_than_the_node_has(
    api: tuple[Client, Controller],
) -> None:
    client, _ = api
    node = this_node()
    huge = node.memory_mb + 1024
    resp = await client.post("/v1/deployments", json={**WEB, "resources": {"memory_mb": huge}})
    assert resp.status == 422
    body = await resp.json()
    assert body["field"] == "resources.memory_mb"
    assert f"{node.memory_mb} MB" in body["message"]
    assert (await client.post("/v1/deployments", json=WEB)).status == 201
    resp = await client.patch("/v1/deployments/web", json={"resources": {"memory_mb": huge}})
    assert resp.status == 422 and (await resp.json())["field"] == "resources.memory_mb"
    resp = await client.patch("/v1/deployments/web", json={"resources": {"cpu": node.cpus + 1}})
    assert resp.status == 422 and (await resp.json())["field"] == "resources.cpu"


async def test_capacity_counts_running_instances_and_warns_once(
    api: tuple[Client, Controller],
) -> None:
    client, controller = api
    node = this_node()
    # a stopped deployment as large as the node is not counted
    big = {**WEB, "name": "big", "resources": {"cpu": node.cpus}, "deploy_on_create": False}
    resp = await client.post("/v1/deployments", json=big)
    assert resp.status == 201
    assert (await resp.json())["capacity"]["warning"] is None
    resp = await client.post("/v1/deployments", json={**WEB, "resources": {"cpu": node.cpus}})
    body = await resp.json()
    assert body["capacity"]["committed"]["cpu"] == 0
    assert body["capacity"]["warning"] is None
    # once "big" runs, a change that needs more than the node warns, in plain words
    big_id = (await (await client.get("/v1/deployments/big")).json())["id"]
    controller.by_id[big_id] = [running(0)]
    resp = await client.patch("/v1/deployments/web", json={"scale": {"min": 2, "max": 2}})
    warning = (await resp.json())["capacity"]["warning"]
    assert warning is not None and "CPUs" in warning and "scale.max" not in warning
    # a GET does not repeat it
    shown = await (await client.get("/v1/deployments/web")).json()
    assert shown["capacity"]["warning"] is None and shown["capacity"]["fits"] is False
