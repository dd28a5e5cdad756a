"""``/v1/nodes``: the node view over the API, and the pure parts of patrd/control/nodes.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.control.nodes import LocalNodes, local_node, match_node, still_serving
from patrd.engine.swarm import NodeInfo
from patrd.engine.swarm_tasks import SwarmInstance
from patrd.model.errors import Conflict, NotFound
from patrd.model.instances import ContainerState, Instance
from patrd.model.views import InstanceView
from patrd.settings.config import Config
from patrd.state.store import Store
from tests.support.api_fakes import FakeController


def node(node_id: str, hostname: str = "box", availability: str = "active") -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        hostname=hostname,
        address="10.250.1.11",
        role="worker",
        state="ready",
        availability=availability,
        leader=False,
        cpus=2.0,
        memory_bytes=2**30,
        labels={},
        instances=1,
    )


class FakeNodes:
    def __init__(self) -> None:
        self.nodes = [node("abc123"), node("abd456", hostname="other")]
        self.calls: list[tuple[str, str]] = []

    async def list(self) -> list[NodeInfo]:
        return self.nodes

    async def drain(self, wanted: str) -> NodeInfo:
        self.calls.append(("drain", wanted))
        found = match_node(self.nodes, wanted)
        return node(found.node_id, found.hostname, "drain")

    async def activate(self, wanted: str) -> NodeInfo:
        self.calls.append(("activate", wanted))
        return match_node(self.nodes, wanted)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], FakeNodes]]:
    store = await Store.open(tmp_path / "patrd.db")
    nodes = FakeNodes()
    app = build_app(store, FakeController(), Config(), token=None, nodes=nodes)
    async with TestClient(TestServer(app)) as client:
        yield client, nodes
    await store.close()


async def test_list_drain_activate(setup: tuple[TestClient[Any, Any], FakeNodes]) -> None:
    client, nodes = setup
    response = await client.get("/v1/nodes")
    assert response.status == 200
    body = await response.json()
    assert [n["id"] for n in body["nodes"]] == ["abc123", "abd456"]
    assert set(body["nodes"][0]) == {
        "id",
        "hostname",
        "address",
        "role",
        "leader",
        "state",
        "availability",
        "cpus",
        "memory_bytes",
        "labels",
        "instances",
        "agent",  # null here: the docker backend, or a swarm node not asked
    }
    response = await client.post("/v1/nodes/other/drain")
    assert response.status == 200
    assert (await response.json())["availability"] == "drain"
    response = await client.post("/v1/nodes/abc/activate")
    assert (await response.json())["id"] == "abc123"
    response = await client.post("/v1/nodes/ab/drain")  # two nodes start with "ab"
    assert response.status == 409
    assert "use the node ID" in (await response.json())["message"]
    response = await client.post("/v1/nodes/zzz/drain")
    assert response.status == 404
    assert nodes.calls == [
        ("drain", "other"),
        ("activate", "abc"),
        ("drain", "ab"),
        ("drain", "zzz"),
    ]


async def test_without_a_node_view_the_routes_say_unavailable(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "patrd.db")
    app = build_app(store, FakeController(), Config(), token=None)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/v1/nodes")).status == 503
    await store.close()


def test_match_node_prefers_the_exact_id() -> None:
    nodes = [node("abc"), node("abcdef")]
    assert match_node(nodes, "abc").node_id == "abc"
    assert match_node(nodes, "abcd").node_id == "abcdef"
    with pytest.raises(NotFound):
        match_node(nodes, "x")


class FakeEngine:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return self.instances


def inst(state: ContainerState) -> Instance:
    return Instance("c", "web-0", "dep", "web", 1, 0, state, "172.18.0.2", None)


async def test_the_docker_backend_lists_one_node_and_refuses_drains() -> None:
    async def info() -> dict[str, Any]:
        return {"ID": "ENGINE", "Name": "box", "NCPU": 2, "MemTotal": 4 * 2**30}

    engine = FakeEngine([inst(ContainerState.RUNNING), inst(ContainerState.EXITED)])
    local = LocalNodes(engine, info)  # type: ignore[arg-type]
    (only,) = await local.list()
    assert only == local_node(await info(), 1)
    assert (only.role, only.state, only.availability, only.cpus) == (
        "standalone",
        "ready",
        "active",
        2.0,
    )
    with pytest.raises(Conflict, match=r"engine\.backend = swarm"):
        await local.drain("box")
    with pytest.raises(Conflict):
        await local.activate("box")


class Proxy:
    def __init__(self, busy: set[tuple[str, int]]) -> None:
        self.busy = busy

    def outstanding(self, host: str, port: int) -> int:
        return 1 if (host, port) in self.busy else 0


def view(container_id: str, ready: bool) -> InstanceView:
    return InstanceView("web-0", container_id, 1, 0, "running", ready, None, 0)


def test_a_withheld_task_serves_while_pooled_or_with_requests_in_flight() -> None:
    swarm_task = SwarmInstance(
        instance=inst(ContainerState.RUNNING),
        service_id="svc",
        task_id="t1",
        node_id="n1",
        node_address="10.250.1.12",
        port=30001,
        ports={80: 30001},
        task_state="running",
        desired_state="running",
        error="",
    )
    pooled = {"dep": [view("svc.t1", True)]}
    out = {"dep": [view("svc.t1", False)]}
    assert still_serving([swarm_task], pooled, Proxy(set())) == ["web-0"]
    assert still_serving([swarm_task], out, Proxy({("10.250.1.12", 30001)})) == ["web-0"]
    assert still_serving([swarm_task], out, Proxy(set())) == []


def test_patrctl_node_actions_parse_and_node_alone_stays_host_health(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from patrd.cli.main import parse_args
    from patrd.cli.nodes import cmd, nodes_table

    assert parse_args(["node"]).node_verb is None
    assert parse_args(["node", "--events", "3"]).events == 3
    args = parse_args(["node", "drain", "abc", "--json"])
    assert (args.node_verb, args.node, args.json) == ("drain", "abc", True)
    with pytest.raises(SystemExit):
        parse_args(["node", "drain"])  # NODE is required

    class Client:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def request(self, method: str, path: str, *, body: Any = None) -> Any:
            self.calls.append((method, path))
            one = {
                "id": "abc123456789xyz",
                "hostname": "box",
                "address": "10.250.1.11",
                "role": "manager",
                "leader": True,
                "state": "ready",
                "availability": "drain",
                "cpus": 2.0,
                "memory_bytes": 2 * 2**30,
                "labels": {},
                "instances": 3,
            }
            return {"nodes": [one]} if method == "GET" else one

    client = Client()
    assert cmd(client, parse_args(["node", "list"])) == 0
    assert cmd(client, parse_args(["node", "drain", "abc"])) == 0
    assert client.calls == [("GET", "/v1/nodes"), ("POST", "/v1/nodes/abc/drain")]
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "ID",
        "ADDRESS",
        "ROLE",
        "STATE",
        "AVAILABILITY",
        "CPUS",
        "MEMORY",
        "INSTANCES",
    ]
    assert out[1].split() == [
        "abc123456789",
        "*",
        "10.250.1.11",
        "manager",
        "ready",
        "drain",
        "2",
        "2.0",
        "GiB",
        "3",
    ]
    assert out[2] == "node abc123456789 (10.250.1.11): drain"
    assert nodes_table([]).split() == out[0].split()


class FakeBackend:
    """The SwarmBackend calls a drain makes, recorded in order."""

    def __init__(self, tasks: list[SwarmInstance]) -> None:
        self.tasks = tasks
        self.calls: list[str] = []

    async def nodes(self) -> list[NodeInfo]:
        return [node("n1", "one"), node("n2", "two")]

    async def node_tasks(self, node_id: str) -> list[SwarmInstance]:
        self.calls.append(f"tasks {node_id}")
        return self.tasks

    def withhold(self, node_id: str) -> None:
        self.calls.append(f"withhold {node_id}")

    def release(self, node_id: str) -> None:
        self.calls.append(f"release {node_id}")

    async def set_availability(self, node_id: str, availability: str) -> NodeInfo:
        self.calls.append(f"{availability} {node_id}")
        return node(node_id, availability=availability)


class SlowPools:
    """Reports the withheld instance ready for ``passes`` looks, then out of the pool."""

    def __init__(self, backend: FakeBackend, passes: int) -> None:
        self.backend = backend
        self.passes = passes
        self.woken = 0

    def wake(self, deployment_id: str | None = None) -> None:
        self.woken += 1

    def instances(self, deployment_id: str) -> list[InstanceView]:
        self.passes -= 1
        self.backend.calls.append("look")
        return [view("svc.t1", self.passes >= 0)]


def swarm_task() -> SwarmInstance:
    return SwarmInstance(
        instance=inst(ContainerState.RUNNING),
        service_id="svc",
        task_id="t1",
        node_id="n2",
        node_address="10.250.1.12",
        port=30001,
        ports={80: 30001},
        task_state="running",
        desired_state="running",
        error="",
    )


async def test_a_drain_withholds_waits_until_out_of_the_pools_then_drains() -> None:
    from patrd.control.nodes import SwarmNodes

    backend = FakeBackend([swarm_task()])
    pools = SlowPools(backend, passes=2)
    nodes = SwarmNodes(backend, pools, Proxy(set()), drain_timeout_s=5)  # type: ignore[arg-type]
    drained = await nodes.drain("two")
    assert drained.availability == "drain"
    assert pools.woken == 1
    assert backend.calls == [
        "tasks n2",
        "withhold n2",
        "look",
        "look",
        "look",  # out of the pool now
        "drain n2",
        "release n2",
    ]
    backend.calls.clear()
    assert (await nodes.activate("n1")).availability == "active"
    assert backend.calls == ["active n1"]
    with pytest.raises(NotFound):
        await nodes.drain("three")


async def test_a_drain_is_bounded_when_requests_never_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from patrd.control import nodes as nodes_module

    monkeypatch.setattr(nodes_module, "WAKE_BOUND_S", 0.0)
    backend = FakeBackend([swarm_task()])
    busy = Proxy({("10.250.1.12", 30001)})  # a request that never ends
    swarm_nodes = nodes_module.SwarmNodes(
        backend,  # type: ignore[arg-type]
        SlowPools(backend, passes=0),
        busy,
        drain_timeout_s=0.3,
    )
    started = asyncio.get_running_loop().time()
    assert (await swarm_nodes.drain("n2")).availability == "drain"
    assert 0.3 <= asyncio.get_running_loop().time() - started < 2
    assert backend.calls[-2:] == ["drain n2", "release n2"]
