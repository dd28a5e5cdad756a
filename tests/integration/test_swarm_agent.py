"""Logs and metrics of instances on every swarm node, read from the manager (issue 17).

A real 3-node swarm (tests/support/swarm.py); patrd runs in the root namespace
against the manager's socket, as in test_swarm_backend.py. Each worker runs
``patrd agent`` in its own network namespace against its own dockerd, with a
copy of the token the manager wrote (``<data_dir>/agent.token``); the manager's
sampler reaches them at ``node address:engine.agent_port``. Logs need no
agent: the manager's ``/tasks/{id}/logs`` streams them from the task's node;
exec into a worker's instance goes through its agent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from patrd.observe.agent_wire import TASKS_PATH
from tests.support.attach import attach
from tests.support.daemon import Api, Daemon
from tests.support.swarm import Swarm, SwarmNode
from tests.support.swarm_patrd import AGENT_PORT, Agent, swarm_daemon
from tests.support.waits import rolled_out, until

# serial: three dockerds, and an autoscaler timing (scripts/test runs these alone).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

SETTLE_S = 240.0  # create → all ready, on a loaded 2-core box


@pytest.fixture
async def cluster(
    swarm: Swarm, tmp_path: Path
) -> AsyncIterator[tuple[Daemon, Api, dict[int, Agent]]]:
    sections: dict[str, Any] = {
        "metrics": {"interval_s": 1},
        "autoscale": {"interval_s": 1, "window_s": 4, "stabilization_s": 6},
    }
    agents: dict[int, Agent] = {}
    async with swarm_daemon(swarm, tmp_path, **sections) as (daemon, api):
        try:
            token = daemon.data_dir / "agent.token"
            assert token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)
            for node in swarm.nodes[1:]:
                copy = tmp_path / f"token-{node.index}"  # what an operator copies to each node
                shutil.copy(token, copy)
                log = tmp_path / f"agent-{node.index}.log"
                agents[node.index] = Agent(node, copy, log, "--log-level", "debug")
            yield daemon, api, agents
        finally:
            for agent in agents.values():
                agent.stop()


def spec(name: str, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "scale": {"min": replicas, "max": replicas},
        # A line every 0.3 s: something to read, and a little CPU to measure.
        "env": {"LOG_EVERY": "0.3"},
        "startup_probe": {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5},
    }


async def test_logs_and_metrics_of_instances_on_workers_read_from_the_manager(
    swarm: Swarm, cluster: tuple[Daemon, Api, dict[int, Agent]]
) -> None:
    daemon, api, agents = cluster
    by_address = {n.address: n for n in swarm.nodes}
    name = f"ag-{uuid.uuid4().hex[:6]}"
    await api.ok("POST", "/v1/deployments", spec(name, 3))
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "3 instances ready", daemon, 0.5)
    instances = (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
    where = {i["name"]: by_address[i["address"]] for i in instances}
    on_workers = {n: node for n, node in where.items() if node is not swarm.manager}
    print(f"\nplacement: { {n: node.index for n, node in where.items()} }")
    assert on_workers, f"no instance on a worker: {where}"

    # Logs: every instance's start line and its numbered lines, workers' included.
    async def every_instance_logged() -> dict[str, list[str]] | None:
        lines = await read_logs(daemon, name)
        texts = {n: [x["line"] for x in lines if x["instance"] == n] for n in where}
        if all(any(t.startswith("start ") for t in v) and len(v) > 3 for v in texts.values()):
            return texts
        return None

    started = time.monotonic()
    texts = await until(every_instance_logged, 60, "every instance's lines", daemon, 0.5)
    print(f"logs of all 3 instances: {time.monotonic() - started:.1f}s")
    for instance in on_workers:
        assert any(t.startswith("line ") for t in texts[instance]), texts[instance][:5]

    # Following a worker's instance: new lines arrive as they are written.
    followed = next(iter(on_workers))
    fresh: list[str] = []
    connector = aiohttp.UnixConnector(path=str(daemon.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(
            f"http://patrd/v1/deployments/{name}/logs?follow=true&tail=0&instance={followed}"
        ) as resp,
    ):
        assert resp.status == 200
        async with asyncio.timeout(30):
            async for raw in resp.content:
                line = json.loads(raw)
                assert line["instance"] == followed
                fresh.append(line["line"])
                if len(fresh) >= 3:
                    break
    assert all(t.startswith("line ") for t in fresh), fresh

    # Metrics: figures of the workers' instances come from their agents.
    async def every_instance_measured() -> list[dict[str, Any]] | None:
        current: list[dict[str, Any]] = (await api.ok("GET", f"/v1/deployments/{name}/metrics"))[
            "current"
        ]
        got = {c["instance"]: c for c in current}
        if set(got) == set(where) and all(c["cpu_cores"] > 0 for c in current):
            return current
        return None

    started = time.monotonic()
    current = await until(every_instance_measured, 60, "figures of all 3", daemon, 0.5)
    print(f"metrics of all 3 instances: {time.monotonic() - started:.1f}s: {current}")
    agents_shown = {n["id"]: n["agent"] for n in (await api.ok("GET", "/v1/nodes"))["nodes"]}
    assert agents_shown == {
        n.node_id: "local" if n is swarm.manager else "ok" for n in swarm.nodes
    }, agents_shown
    for sample in current:
        assert sample["memory_bytes"] > 0
        assert sample["memory_limit_bytes"] and sample["memory_limit_bytes"] > 0
        via_agent = sample["source"].endswith(" via agent")
        assert via_agent == (sample["instance"] in on_workers), sample

    # The agent answers only with the manager's token.
    worker = next(iter(on_workers.values()))
    url = f"http://{worker.address}:{AGENT_PORT}{TASKS_PATH}"
    token = (daemon.data_dir / "agent.token").read_text().strip()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 401, (headers, resp.status)
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            report = await resp.json()
    assert report["node"] == worker.node_id
    assert {t["task"] for t in report["tasks"]} and all(
        t["counters"]["cpu_ns"] > 0 for t in report["tasks"]
    )
    assert token not in agents[worker.index].log()
    assert token not in daemon.log_path.read_text(errors="replace")

    # exec into every instance, the workers' through their agents: stdin, its EOF,
    # both streams and the exit status; then a TTY on a worker.
    for instance in where:
        created = await api.ok(
            "POST",
            f"/v1/deployments/{name}/exec",
            {
                "command": ["sh", "-c", "cat; echo $PATRD_INSTANCE; echo bad >&2; exit 3"],
                "instance": instance,
                "stdin": True,
            },
        )
        slot = instance.rsplit("-", 1)[1]
        got = await attach(daemon, created["attach"], stdin=b"piped in\n")
        assert got == (f"piped in\n{slot}\n".encode(), b"bad\n", 3), (instance, got)
    worker_instance = next(iter(on_workers))
    created = await api.ok(
        "POST",
        f"/v1/deployments/{name}/exec",
        {
            "command": ["sh", "-c", "[ -t 1 ] && echo is-a-tty"],
            "instance": worker_instance,
            "tty": True,
        },
    )
    out, _, code = await attach(daemon, created["attach"] + "?rows=40&cols=120")
    assert code == 0 and b"is-a-tty" in out, (out, code)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(
            f"http://{worker.address}:{AGENT_PORT}/v1/agent/exec",
            json={"task": "x", "command": ["id"]},
        ) as resp,
    ):
        assert resp.status == 401  # exec too: only with the token

    # A worker's agent goes away: its instances lose their figures, the others keep theirs.
    gone = agents[worker.index]
    gone.stop()
    started = time.monotonic()

    async def without_gone_node() -> list[dict[str, Any]] | None:
        current = (await api.ok("GET", f"/v1/deployments/{name}/metrics"))["current"]
        got = {c["instance"] for c in current}
        expected = {n for n, node in where.items() if node is not worker}
        return current if got == expected else None

    await until(without_gone_node, 30, "figures of the other nodes only", daemon, 0.5)
    print(f"agent away → its instances out of the figures: {time.monotonic() - started:.1f}s")
    assert "agent_away" in daemon.log_path.read_text(errors="replace")
    shown = {n["id"]: n["agent"] for n in (await api.ok("GET", "/v1/nodes"))["nodes"]}
    assert shown[worker.node_id] == "away", shown

    # Scale down: the removed instance's logs are kept (read through the manager first).
    removed = max(where)
    await api.ok("PATCH", f"/v1/deployments/{name}", {"scale": {"min": 2, "max": 2}})

    async def kept() -> Any:
        lines = await read_logs(daemon, name)
        return [x for x in lines if x["instance"] == removed and x.get("removed")] or None

    kept_lines = await until(kept, 90, f"the kept logs of {removed}", daemon, 0.5)
    assert any(x["line"].startswith("start ") for x in kept_lines)

    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=SETTLE_S)


async def read_logs(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    """The deployment's logs (JSON lines) through the API socket."""
    connector = aiohttp.UnixConnector(path=str(daemon.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"http://patrd/v1/deployments/{name}/logs?tail=all") as resp,
    ):
        assert resp.status == 200, await resp.text()
        body = await resp.text()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def node_volumes(node: SwarmNode, name: str) -> set[str]:
    """The deployment's volumes on one node, as that node's own engine lists them."""
    out = node.docker("volume", "ls", "-q", "--filter", f"label=patrd.deployment={name}")
    return set(out.split())


async def test_volumes_on_workers_are_listed_and_removed_through_their_agents(
    swarm: Swarm, cluster: tuple[Daemon, Api, dict[int, Agent]]
) -> None:
    daemon, api, _ = cluster
    by_address = {n.address: n for n in swarm.nodes}
    name = f"agv-{uuid.uuid4().hex[:6]}"
    body = {**spec(name, 2), "volumes": {"data": {"path": "/data", "size_gb": 1}}}
    await api.ok("POST", "/v1/deployments", body)
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "2 instances ready", daemon, 0.5)
    instances = (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
    home = {i["slot"]: by_address[i["address"]] for i in instances}
    print(f"\nvolume homes: { {s: n.index for s, n in home.items()} }")
    assert home[0] is not home[1], home
    assert any(n is not swarm.manager for n in home.values()), "no volume on a worker"
    for slot, node in home.items():
        assert node_volumes(node, name) == {f"patrd.{name}.data.{slot}"}, (slot, node.index)
    # The volumes on workers are patrd's (labelled by the node that made them) and listed.
    listed = (await api.ok("GET", f"/v1/deployments/{name}/volumes"))["volumes"]
    assert sorted((v["volume"], v["instance"]) for v in listed) == [
        (f"patrd.{name}.data.0", 0),
        (f"patrd.{name}.data.1", 1),
    ]

    # Scale down (confirmed): slot 1's volume goes from its node, and its home record.
    started = time.monotonic()
    await api.ok(
        "PATCH",
        f"/v1/deployments/{name}?confirm_volume_loss=true",
        {"scale": {"min": 1, "max": 1}},
    )
    await until(
        lambda: not node_volumes(home[1], name), 180, "slot 1's volume removed", daemon, 0.5
    )
    print(
        f"scale-down → slot 1's volume removed on node {home[1].index}: "
        f"{time.monotonic() - started:.1f}s"
    )
    labels = swarm.manager.docker(
        "node", "inspect", "--format", "{{json .Spec.Labels}}", home[1].node_id
    )
    assert f"patrd.volume.patrd.{name}.data.1" not in labels, labels
    assert node_volumes(home[0], name) == {f"patrd.{name}.data.0"}

    # Delete with its volumes: slot 0's goes too, wherever it is.
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}&delete_volumes=true")
    await api.wait_gone(name, timeout=SETTLE_S)
    await until(
        lambda: not any(node_volumes(n, name) for n in swarm.nodes),
        180,
        "every volume removed",
        daemon,
        0.5,
    )


async def test_the_autoscaler_sees_a_busy_instance_on_a_worker(
    swarm: Swarm, cluster: tuple[Daemon, Api, dict[int, Agent]]
) -> None:
    daemon, api, _ = cluster
    by_address = {n.address: n for n in swarm.nodes}
    # Only workers take new tasks here: the instance's figures can only come from an agent.
    swarm.manager.docker("node", "update", "--availability", "drain", swarm.manager.node_id)
    try:
        name = f"aga-{uuid.uuid4().hex[:6]}"
        body = {
            **spec(name, 1),
            "scale": {"min": 1, "max": 2, "target_cpu": 50},
            # A core's worth of `yes` held to 0.25 cores by its quota: 100 % of its allocation.
            "resources": {"cpu": 0.25, "memory_mb": 64},
            "env": {"BURN": "1"},
        }
        await api.ok("POST", "/v1/deployments", body)
        await until(lambda: rolled_out(api, name, 1), SETTLE_S, "1 instance ready", daemon, 0.5)
        (first,) = (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
        assert by_address[first["address"]] is not swarm.manager
        started = time.monotonic()

        async def scaled_up() -> bool:
            dep = await api.ok("GET", f"/v1/deployments/{name}")
            return bool(dep["replicas"] == 2)

        await until(scaled_up, 60, "scaled up to 2", daemon, 0.5)
        print(f"\nbusy instance on a worker → scaled up to 2: {time.monotonic() - started:.1f}s")
        events = (await api.ok("GET", f"/v1/deployments/{name}/events?limit=50"))["events"]
        (up,) = [e for e in events if e["kind"] == "autoscale"]
        assert up["message"].startswith("scale up 1 → 2"), up
        current = (await api.ok("GET", f"/v1/deployments/{name}/metrics"))["current"]
        busy = next(c for c in current if c["instance"] == first["name"])
        assert busy["source"].endswith(" via agent") and busy["cpu_usage"] > 0.5, busy
        assert busy["cpu_allocation_cores"] == pytest.approx(0.25), busy
        await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
        await api.wait_gone(name, timeout=SETTLE_S)
    finally:
        swarm.manager.docker("node", "update", "--availability", "active", swarm.manager.node_id)
