"""SwarmEngine against a real 3-node Docker Swarm on this machine.

Three dockerds in three network namespaces on one bridge (tests/support/swarm.py),
swarm-joined; patrd's side (this test process) stays in the root namespace, like
patrd's proxy on the manager, and dials every instance at node address +
host-mode published port.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from patrd.engine.hardening import DEFAULT_PIDS_LIMIT
from patrd.engine.swarm import SwarmEngine
from patrd.engine.swarm_tasks import SwarmInstance
from patrd.model.errors import EngineError
from patrd.model.instances import ContainerState, InstanceSpec
from tests.support.swarm import Swarm, SwarmNode
from tests.support.waits import until

# serial: three dockerds (scripts/test runs these alone, after the parallel part).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

IMAGE = "patrd-test/web:v1"
TASK_TIMEOUT_S = 120.0  # create → HTTP 200 measured ~3 s (load ~19 on 2 cores)


@pytest.fixture
async def engine(swarm: Swarm) -> AsyncIterator[SwarmEngine]:
    if crashed := swarm.revive():
        print(f"\nstarted again after a crash in an earlier test:\n{crashed}")
    owner = f"swarm-test-{uuid.uuid4().hex[:6]}"
    eng = SwarmEngine(swarm.manager.url, owner=owner, restart_delay_s=1)
    try:
        yield eng
        for s in await eng.list_tasks():
            await eng.remove(s.service_id, stop_timeout_s=5)
        for n in await eng.list_networks():
            await eng.remove_network(n.name)
        for node in await eng.nodes():
            if node.availability != "active":
                await eng.set_availability(node.node_id, "active")
    finally:
        await eng.close()


def spec(deployment: str, slot: int, network: str) -> InstanceSpec:
    return InstanceSpec(
        container_name=f"{deployment}-{slot}",
        deployment_id=f"id-{deployment}",
        deployment=deployment,
        revision=1,
        slot=slot,
        template="",
        image=IMAGE,
        env=(("PATRD_REVISION", "1"),),
        network=network,
        hostname=f"{deployment}-{slot}",
        cpu=0.25,
        memory_mb=64,
        stop_timeout_s=5,
    )


def containers(node: SwarmNode, deployment: str) -> list[str]:
    names = node.docker("ps", "-a", "--format", "{{.Names}}").split()
    return [n for n in names if n.startswith(f"{deployment}-")]


async def get(address: tuple[str, int]) -> tuple[int, str]:
    host, port = address
    timeout = aiohttp.ClientTimeout(total=3)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://{host}:{port}/") as response:
                return response.status, await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return 0, ""


async def all_answer(
    engine: SwarmEngine, deployment_id: str, count: int, timeout: float, avoid: str = ""
) -> list[SwarmInstance]:
    """Poll until ``count`` instances run (not on node ``avoid``) and each answers 200."""
    last: list[SwarmInstance] = []

    async def answering() -> list[SwarmInstance] | None:
        nonlocal last
        last = await engine.list_tasks(deployment_id)
        placed = [
            s
            for s in last
            if s.instance.state is ContainerState.RUNNING
            and s.address is not None
            and s.node_id != avoid
        ]
        if len(placed) != count:
            return None
        answers = await asyncio.gather(*(get(s.address) for s in placed if s.address))
        if all(code == 200 and body == "hello from v1\n" for code, body in answers):
            return placed
        return None

    def tasks() -> str:
        return "; ".join(f"{s.instance.container_name} {s.task_state} {s.error}" for s in last)

    placed: list[SwarmInstance] = await until(
        answering, timeout, f"{count} instances answering", interval=0.5, detail=tasks
    )
    return placed


async def test_node_view_shows_the_three_nodes(swarm: Swarm, engine: SwarmEngine) -> None:
    assert "swarm, 3 nodes" in await engine.ping()
    nodes = await engine.nodes()
    assert {n.node_id for n in nodes} == {n.node_id for n in swarm.nodes}
    assert {n.address for n in nodes} == {n.address for n in swarm.nodes}
    by_id = {n.node_id: n for n in nodes}
    manager = by_id[swarm.manager.node_id]
    assert (manager.role, manager.leader) == ("manager", True)
    assert sorted(n.role for n in nodes) == ["manager", "worker", "worker"]
    for n in nodes:
        assert (n.state, n.availability) == ("ready", "active")
        assert n.cpus > 0 and n.memory_bytes > 64 * 1024 * 1024
        assert n.instances == 0
    with pytest.raises(EngineError, match="no node"):
        await engine.set_availability("no-such-node", "drain")


async def test_instances_spread_answer_and_move_off_a_drained_node(
    swarm: Swarm, engine: SwarmEngine
) -> None:
    deployment = f"sw-{uuid.uuid4().hex[:6]}"
    network = f"patrd-{deployment}"
    await engine.ensure_network(network, deployment, f"id-{deployment}")
    await engine.ensure_network(network, deployment, f"id-{deployment}")  # idempotent
    started = time.monotonic()
    ids = [await engine.create_instance(spec(deployment, slot, network)) for slot in range(4)]
    assert len(set(ids)) == 4
    # Creating the same slot again finds the existing service.
    assert await engine.create_instance(spec(deployment, 0, network)) == ids[0]

    placed = await all_answer(engine, f"id-{deployment}", 4, TASK_TIMEOUT_S)
    print(f"\n4 instances created → all answering: {time.monotonic() - started:.1f}s")
    assert {s.service_id for s in placed} == set(ids)
    assert sorted(s.instance.slot for s in placed) == [0, 1, 2, 3]
    nodes_used = {s.node_id for s in placed}
    assert len(nodes_used) >= 2, f"all tasks on one node: {nodes_used}"
    for s in placed:
        assert (
            s.node_address == swarm.nodes[[n.node_id for n in swarm.nodes].index(s.node_id)].address
        )
        assert s.instance.ip == s.node_address
    counts = {n.node_id: n.instances for n in await engine.nodes()}
    assert sum(counts.values()) == 4

    # Drain the busiest node: its tasks are shut down and rescheduled elsewhere.
    busiest = max(nodes_used, key=lambda node: sum(s.node_id == node for s in placed))
    moved = {s.service_id: s.address for s in placed if s.node_id == busiest}
    drained = await engine.set_availability(busiest, "drain")
    assert drained.availability == "drain"
    started = time.monotonic()
    after = await all_answer(engine, f"id-{deployment}", 4, TASK_TIMEOUT_S, avoid=busiest)
    print(f"drain → {len(moved)} task(s) answering elsewhere: {time.monotonic() - started:.1f}s")
    for s in after:
        assert s.node_id != busiest
        if s.service_id in moved:
            assert s.address != moved[s.service_id]
    counts = {n.node_id: n.instances for n in await engine.nodes()}
    assert counts[busiest] == 0
    assert (await engine.set_availability(busiest, "active")).availability == "active"

    # Remove: services, tasks and containers go.
    for service_id in ids:
        await engine.remove(service_id, stop_timeout_s=5)
    assert await engine.list_tasks(f"id-{deployment}") == []
    await engine.remove(ids[0], stop_timeout_s=5)  # already gone: no error
    # Stopped when remove() returns; the nodes delete the stopped containers shortly after.
    for node in swarm.nodes:
        running = node.docker("ps", "--format", "{{.Names}}").split()
        assert not [n for n in running if n.startswith(deployment)], (node.index, running)
    await until(
        lambda: not [n for node in swarm.nodes for n in containers(node, deployment)],
        120,
        "no container left on the nodes",
        interval=0.5,
    )
    await engine.remove_network(network)
    assert network not in {n.name for n in await engine.list_networks()}


async def test_pinned_instance_runs_on_its_node_with_limits(
    swarm: Swarm, engine: SwarmEngine
) -> None:
    deployment = f"pin-{uuid.uuid4().hex[:6]}"
    network = f"patrd-{deployment}"
    await engine.ensure_network(network, deployment, f"id-{deployment}")
    target = swarm.nodes[2]
    await engine.create_instance(spec(deployment, 0, network), node=target.node_id)
    started = time.monotonic()
    (placed,) = await all_answer(engine, f"id-{deployment}", 1, TASK_TIMEOUT_S)
    print(f"\npinned instance created → answering: {time.monotonic() - started:.1f}s")
    # Pinned to the image ID: the node starts it without trying a registry first.
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    image_fmt = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
    assert swarm.manager.docker("service", "inspect", "--format", image_fmt, placed.service_id) == (
        image_id
    )
    assert (placed.node_id, placed.node_address) == (target.node_id, target.address)
    # The task's container carries patrd's labels and limits on the node that runs it.
    fmt = (
        '{{index .Config.Labels "patrd.deployment"}} {{.HostConfig.NanoCpus}} '
        "{{.HostConfig.Memory}} {{.HostConfig.Init}} {{.HostConfig.PidsLimit}} "
        "{{json .HostConfig.CapDrop}}"
    )
    (container,) = target.docker(
        "ps", "-q", "--filter", f"label=patrd.deployment={deployment}"
    ).split()
    assert target.docker("inspect", "--format", fmt, container).split() == [
        deployment,
        str(int(0.25e9)),
        str(64 * 1024 * 1024),
        "true",
        str(DEFAULT_PIDS_LIMIT),
        '["ALL"]',
    ]
