"""The node agent's pure parts, its HTTP answer and the manager's merge (issue 17).

No Docker here: the agent's figures come from a stand-in ``NodeFigures``; the
HTTP server and the manager's client are real (loopback).
"""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from patrd.engine.swarm_node import TaskContainer, task_containers
from patrd.model.errors import EngineError
from patrd.model.instances import ContainerState, Instance
from patrd.observe.agent import NodeFigures, agent_app
from patrd.observe.agent_client import SwarmFigures
from patrd.observe.agent_wire import (
    TASKS_PATH,
    authorized,
    counters_from_json,
    counters_json,
    ensure_token,
    merge,
    parse_report,
    read_token,
    relabel,
    report,
)
from patrd.observe.counters import CgroupReader, Counters
from patrd.observe.metrics import Sampler

TOKEN = "s3cret-token"


def counters(cpu_ns: int, at: float = 1.0, memory: int = 1000) -> Counters:
    return Counters(at=at, cpu_ns=cpu_ns, memory_bytes=memory, memory_limit=4096, cpu_limit=0.5)


# --- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer  {TOKEN} ", True),
        (None, False),
        ("", False),
        (TOKEN, False),  # no scheme
        (f"Basic {TOKEN}", False),
        ("Bearer ", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
    ],
)
def test_only_the_bearer_token_is_authorized(header: str | None, ok: bool) -> None:
    assert authorized(header, TOKEN) is ok


def test_an_empty_token_authorizes_nothing() -> None:
    assert not authorized("Bearer ", "")
    assert not authorized("Bearer x", "")


def test_the_manager_makes_its_token_once_private(tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    first = ensure_token(path)
    assert len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == first == read_token(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(path)


# --- the report ---------------------------------------------------------------------


def test_counters_survive_the_wire() -> None:
    c = Counters(
        at=12.5,
        cpu_ns=10**12,
        memory_bytes=5 << 20,
        memory_limit=None,
        cpu_limit=1.5,
        rx_bytes=1,
        tx_bytes=2,
        read_bytes=None,
        write_bytes=4,
        source="cgroup v2",
    )
    assert counters_from_json(counters_json(c)) == c
    body = report("node1", [("t1", "c1", c)])
    assert parse_report(body) == {"t1": c}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ([], "not an agent report"),
        ({"tasks": {}}, "not an agent report"),
        ({"tasks": [{"counters": {}}]}, "without its ID"),
        ({"tasks": [{"task": "t"}]}, "without counters"),
        ({"tasks": [{"task": "t", "counters": {"at": 1, "cpu_ns": "9"}}]}, "cpu_ns"),
        ({"tasks": [{"task": "t", "counters": {"at": 1, "cpu_ns": 1}}]}, "memory_bytes"),
        (
            {"tasks": [{"task": "t", "counters": {"at": 1, "cpu_ns": True, "memory_bytes": 1}}]},
            "cpu_ns",
        ),
        (
            {
                "tasks": [
                    {
                        "task": "t",
                        "counters": {"at": 1, "cpu_ns": 1, "memory_bytes": 1, "rx_bytes": "x"},
                    }
                ]
            },
            "rx_bytes",
        ),
    ],
)
def test_a_bad_report_is_refused(body: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_report(body)


def test_unknown_fields_are_ignored() -> None:
    body = {"at": 1, "cpu_ns": 5, "memory_bytes": 7, "gpu": 3}
    assert counters_from_json(body) == Counters(at=1, cpu_ns=5, memory_bytes=7)


def test_merge_maps_tasks_to_instances_and_leaves_plain_containers_out() -> None:
    a, b = counters(1), counters(2)
    ids = ["svc1.task1", "svc2.task2", "svc3.task3", "svc4", "f" * 64]
    merged = merge(ids, [{"task1": a}, {"task2": b, "other": a}])
    # svc4: a slot with no task yet (nothing to read, None); the 64-hex ID is a
    # plain container the sampler reads itself; task3's node did not answer.
    assert merged == {"svc1.task1": a, "svc2.task2": b, "svc3.task3": None}


def test_relabel_says_where_figures_came_from() -> None:
    c = Counters(at=1, cpu_ns=1, memory_bytes=1, source="cgroup v1")
    assert relabel({"t": c}, "agent")["t"].source == "cgroup v1 via agent"


def test_task_containers_are_patrd_running_swarm_tasks() -> None:
    summaries: list[dict[str, Any]] = [
        {
            "Id": "c1",
            "State": "running",
            "Labels": {
                "patrd.managed": "1",
                "patrd.deployment-id": "d1",
                "com.docker.swarm.task.id": "t1",
                "com.docker.swarm.node.id": "n1",
            },
        },
        {"Id": "c2", "State": "running", "Labels": {"patrd.managed": "1"}},  # not a task
        {"Id": "c3", "State": "running", "Labels": {"com.docker.swarm.task.id": "t3"}},
        {
            "Id": "c4",
            "State": "exited",
            "Labels": {"patrd.managed": "1", "com.docker.swarm.task.id": "t4"},
        },
        {"Id": "c5", "State": "running", "Labels": None},
    ]
    assert task_containers(summaries) == [TaskContainer("t1", "c1", "d1", "n1")]


# --- the agent's HTTP answer and the manager's client ----------------------------------


class FixedFigures(NodeFigures):
    """Stands in for a node: fixed task containers and counters (or an engine failure)."""

    def __init__(self, found: dict[str, Counters], fail: bool = False) -> None:
        self.found = found
        self.fail = fail
        self.reads = 0

    async def read(self) -> list[tuple[TaskContainer, Counters]]:
        self.reads += 1
        if self.fail:
            raise EngineError("Docker unreachable")
        return [(TaskContainer(t, f"c-{t}", "d", ""), c) for t, c in self.found.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def agent() -> AsyncIterator[tuple[int, FixedFigures]]:
    figures = FixedFigures({"t1": counters(5_000_000, at=10.0)})
    port = free_port()
    runner = await serve(agent_app(figures, TOKEN, "node-b"), port)
    try:
        yield port, figures
    finally:
        await runner.cleanup()


async def test_the_agent_answers_only_with_the_token(agent: tuple[int, FixedFigures]) -> None:
    port, figures = agent
    url = f"http://127.0.0.1:{port}{TASKS_PATH}"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert TOKEN not in await resp.text()
        assert figures.reads == 0  # refused before anything is read
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["node"] == "node-b"
    assert parse_report(body) == {"t1": counters(5_000_000, at=10.0)}


async def test_the_agent_says_503_when_its_engine_fails() -> None:
    port = free_port()
    runner = await serve(agent_app(FixedFigures({}, fail=True), TOKEN), port)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}{TASKS_PATH}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp,
        ):
            assert resp.status == 503
    finally:
        await runner.cleanup()


class Nodes:
    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses

    async def agent_nodes(self) -> tuple[str, dict[str, str]]:
        return "node-a", {"node-a": "127.0.0.1", **self.addresses}


async def test_the_manager_merges_its_own_node_and_the_agents(
    agent: tuple[int, FixedFigures],
) -> None:
    port, _ = agent
    local = FixedFigures({"t0": counters(1_000, at=3.0)})
    figures = SwarmFigures(Nodes({"node-b": "127.0.0.1"}), local, TOKEN, port)
    try:
        got = await figures.read(["s0.t0", "s1.t1", "s2.t2", "e" * 64])
    finally:
        await figures.close()
    assert got["s0.t0"] == counters(1_000, at=3.0)  # this node: read here, not via an agent
    remote = got["s1.t1"]
    assert remote is not None and remote.cpu_ns == 5_000_000 and remote.at == 10.0
    assert remote.source == "cgroup via agent"
    assert got["s2.t2"] is None
    assert "e" * 64 not in got
    assert figures.away == {}
    assert [figures.state(n) for n in ("node-a", "node-b", "node-z")] == [
        "local",
        "ok",
        "unknown",
    ]


async def test_an_agent_that_is_away_costs_its_timeout_and_nothing_else(
    agent: tuple[int, FixedFigures],
) -> None:
    port, _ = agent
    # node-c: accepts the connection (the listen backlog) and never answers;
    # node-d: nothing listens (refused at once).
    silent = socket.socket()
    silent.bind(("127.0.0.3", port))
    silent.listen(8)
    nodes = Nodes({"node-b": "127.0.0.1", "node-c": "127.0.0.3", "node-d": "127.0.0.4"})
    figures = SwarmFigures(nodes, FixedFigures({}), TOKEN, port, timeout_s=0.5)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await figures.read(["s1.t1"])
        took = loop.time() - started
        assert got["s1.t1"] is not None  # node-b's figures arrived all the same
        assert 0.4 < took < 2.0, took  # one timeout, not one per away node
        assert set(figures.away) == {"node-c", "node-d"}
        assert figures.state("node-c") == "away" and figures.state("node-b") == "ok"
        # node-d's agent comes back: no longer away.
        nodes.addresses["node-d"] = "127.0.0.1"
        await figures.read(["s1.t1"])
        assert set(figures.away) == {"node-c"}
        # A node that leaves the swarm (or is not ready) is not an away agent.
        del nodes.addresses["node-c"]
        await figures.read(["s1.t1"])
        assert figures.away == {}
    finally:
        silent.close()
        await figures.close()


async def test_a_wrong_token_is_reported_as_such(agent: tuple[int, FixedFigures]) -> None:
    port, _ = agent
    wrong = SwarmFigures(Nodes({"node-b": "127.0.0.1"}), FixedFigures({}), "bad", port)
    try:
        assert await wrong.read(["s1.t1"]) == {"s1.t1": None}
    finally:
        await wrong.close()
    assert "refused patrd's token" in wrong.away["node-b"]


async def test_nothing_is_asked_without_swarm_instances(agent: tuple[int, FixedFigures]) -> None:
    port, figures = agent
    local = FixedFigures({})
    client = SwarmFigures(Nodes({"node-b": "127.0.0.1"}), local, TOKEN, port)
    assert await client.read(["f" * 64]) == {}
    await client.close()
    assert figures.reads == local.reads == 0


# --- the sampler ------------------------------------------------------------------------


class Engine:
    def __init__(self, instances: Sequence[Instance]) -> None:
        self.instances = list(instances)

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return self.instances

    async def stats(self, container_id: str) -> dict[str, Any]:
        raise EngineError("no such container here")


class Store:
    async def list_deployments(self) -> list[Any]:
        return []


class Remote:
    def __init__(self) -> None:
        self.cpu = 0
        self.asked: list[list[str]] = []

    async def read(self, ids: Sequence[str]) -> dict[str, Counters | None]:
        self.asked.append(list(ids))
        self.cpu += 500_000_000
        return {cid: counters(self.cpu, at=self.cpu / 1e9) for cid in ids if "." in cid}


def instance(cid: str, slot: int) -> Instance:
    return Instance(
        container_id=cid,
        container_name=f"web-{slot}",
        deployment_id="d1",
        deployment="web",
        revision=1,
        slot=slot,
        state=ContainerState.RUNNING,
        ip="10.0.0.2",
        exit_code=None,
    )


async def test_the_sampler_takes_swarm_instances_from_the_remote(tmp_path: Path) -> None:
    remote = Remote()
    engine = Engine([instance("svc.task", 0)])
    sampler = Sampler(engine, Store(), CgroupReader(tmp_path), 1.0, remote=remote)
    assert await sampler.tick() == []  # one reading: no rate yet
    (sample,) = await sampler.tick()
    assert sample.container_id == "svc.task" and sample.instance == "web-0"
    assert sample.cpu_cores == pytest.approx(1.0)  # 0.5 s of CPU in 0.5 s
    assert sample.memory_bytes == 1000 and sample.memory_limit == 4096
    assert remote.asked == [["svc.task"], ["svc.task"]]


async def test_the_node_list_shows_each_agent() -> None:
    from dataclasses import replace as _replace

    from patrd.engine.swarm import NodeInfo
    from patrd.observe.agent_client import WithAgents

    def node(node_id: str) -> NodeInfo:
        return NodeInfo(
            node_id, node_id, "10.0.0.1", "worker", "ready", "active", False, 2.0, 1, {}, 0
        )

    class View:
        async def list(self) -> list[NodeInfo]:
            return [node("node-a"), node("node-b")]

        async def drain(self, name: str) -> NodeInfo:
            return _replace(node(name), availability="drain")

        async def activate(self, name: str) -> NodeInfo:
            return node(name)

    figures = SwarmFigures(Nodes({}), FixedFigures({}), TOKEN, 1)
    figures.self_id = "node-a"
    figures.away["node-b"] = "timeout"
    view = WithAgents(View(), figures)
    assert [(n.node_id, n.agent) for n in await view.list()] == [
        ("node-a", "local"),
        ("node-b", "away"),
    ]
    drained = await view.drain("node-b")
    assert (drained.availability, drained.agent) == ("drain", "away")
    assert (await view.activate("node-c")).agent == "unknown"


def test_patrctl_node_list_shows_the_agent_column_on_a_swarm() -> None:
    from patrd.cli.nodes import nodes_table

    base = {
        "id": "abc123456789xyz",
        "address": "10.250.1.12",
        "role": "worker",
        "leader": False,
        "state": "ready",
        "availability": "active",
        "cpus": 2.0,
        "memory_bytes": 2**30,
        "instances": 1,
    }
    lines = nodes_table([{**base, "agent": "away"}, {**base, "agent": None}]).splitlines()
    assert lines[0].split()[-1] == "AGENT"
    assert lines[1].split()[-1] == "away" and lines[2].split()[-1] == "-"
    assert "AGENT" not in nodes_table([{**base, "agent": None}])


def test_engine_agent_port_defaults_and_is_checked(tmp_path: Path) -> None:
    from patrd.model.errors import ConfigError
    from patrd.settings.config import parse

    assert parse({}, base_dir=tmp_path).engine.agent_port == 7950
    assert parse({"engine": {"agent_port": 9100}}, base_dir=tmp_path).engine.agent_port == 9100
    for bad in (0, 70000, "7950"):
        with pytest.raises(ConfigError) as info:
            parse({"engine": {"agent_port": bad}}, base_dir=tmp_path)
        assert info.value.key == "engine.agent_port"


def test_patrd_agent_parses_its_options() -> None:
    from patrd.cli.serve import build_daemon_parser

    args = build_daemon_parser().parse_args(["agent", "--token-file", "/etc/patrd/agent.token"])
    assert (args.command, args.listen, str(args.token_file)) == (
        "agent",
        "0.0.0.0:7950",
        "/etc/patrd/agent.token",
    )
    assert args.docker == "unix:///var/run/docker.sock"
    with pytest.raises(SystemExit):
        build_daemon_parser().parse_args(["agent"])  # the token file is required


def test_patrd_agent_refuses_a_bad_listen_and_a_missing_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from patrd.cli.serve import daemon_main

    missing = str(tmp_path / "none")
    assert daemon_main(["agent", "--token-file", missing, "--listen", "nope"]) == 2
    assert "--listen must be HOST:PORT" in capsys.readouterr().out
    assert daemon_main(["agent", "--token-file", missing, "--listen", "127.0.0.1:1"]) == 2
    assert "--token-file" in capsys.readouterr().out
