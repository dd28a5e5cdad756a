"""engine.backend = "swarm": a patrd daemon on a real 3-node Docker Swarm (issue 17).

Three dockerds in three network namespaces on one bridge (tests/support/swarm.py).
patrd runs in the root namespace against the manager's socket; its proxy dials
every instance at the node's bridge address and the task's host-mode published
port. All traffic stays on the bridge and namespaces this test creates: nothing
is ever sent to an overlay address.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pyroute2 import IPRoute

from tests.support.daemon import Api, Daemon
from tests.support.load import Load, env_value
from tests.support.swarm import Swarm, SwarmNode
from tests.support.waits import rolled_out, until

# serial: three dockerds, and a node lost under load (scripts/test runs these alone).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

SETTLE_S = 240.0  # create → all ready / drain → all ready elsewhere, on a loaded 2-core box


def body(name: str, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "scale": {"min": replicas, "max": replicas},
        "startup_probe": {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5},
    }


def test_refused_unless_the_engine_manages_a_swarm(swarm: Swarm, tmp_path: Path) -> None:
    worker = swarm.nodes[1]
    daemon = Daemon(tmp_path)
    daemon.config = {"engine": {"backend": "swarm"}, "docker": {"socket": worker.url}}
    with pytest.raises(RuntimeError, match="patrd exited 1") as info:
        daemon.start()
    assert "engine.backend = swarm: this Docker engine is not a swarm manager" in str(info.value)


def patrctl(daemon: Daemon, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "patrctl"), "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def ready_instances(api: Api, name: str) -> list[dict[str, Any]]:
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    return [i for i in dep["instances"] if i["ready"]]


async def each_slot_answers(daemon: Daemon, name: str, slots: int) -> dict[str, int]:
    """GET through patrd's proxy until every slot answered 200 (bounded): slot → answers."""
    seen: dict[str, int] = {}
    key = env_value("PATRD_INSTANCE")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for _ in range(40 * slots):
            async with http.get(
                f"http://127.0.0.1:{daemon.proxy_port}/cgi-bin/env",
                headers={"Host": daemon.host(name)},
            ) as resp:
                assert resp.status == 200, await resp.text()
                slot = key(await resp.text())
                seen[slot] = seen.get(slot, 0) + 1
            if len(seen) == slots:
                return seen
    raise AssertionError(f"not every slot answered through the proxy: {seen}")


async def test_four_instances_spread_proxied_and_drained_without_failures(
    swarm: Swarm, swarm_api: tuple[Daemon, Api]
) -> None:
    daemon, api = swarm_api
    addresses = {n.address: n for n in swarm.nodes}
    nodes = (await api.ok("GET", "/v1/nodes"))["nodes"]
    assert {n["id"] for n in nodes} == {n.node_id for n in swarm.nodes}
    assert sorted(n["role"] for n in nodes) == ["manager", "worker", "worker"]

    name = f"sw-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    await api.ok("POST", "/v1/deployments", body(name, 4))
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "4 instances ready", daemon, 0.5)
    print(f"\ncreate → 4 instances ready: {time.monotonic() - started:.1f}s")
    ready = await ready_instances(api, name)
    assert len(ready) == 4
    used = {i["address"] for i in ready}
    assert used <= set(addresses), used  # node addresses, not container IPs
    assert len(used) >= 2, f"all instances on one node: {used}"
    print(f"placement: { {a: sum(i['address'] == a for i in ready) for a in used} }")
    assert sorted((await each_slot_answers(daemon, name, 4)).keys()) == ["0", "1", "2", "3"]
    counts = {n["id"]: n["instances"] for n in (await api.ok("GET", "/v1/nodes"))["nodes"]}
    assert sum(counts.values()) == 4

    # A rollout under load: every slot replaced by a revision-2 service, one at a time.
    async with Load(
        daemon.proxy_port,
        daemon.host(name),
        "/cgi-bin/env",
        concurrency=4,
        key=env_value("PATRD_REVISION"),
    ) as load:
        await asyncio.sleep(1)
        started = time.monotonic()
        await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
        await until(lambda: rolled_out(api, name, 2), SETTLE_S, "revision 2 out", daemon, 0.5)
        rollout_s = time.monotonic() - started
        await asyncio.sleep(1)
    result = load.result
    print(
        f"rollout of 4 instances: {rollout_s:.1f}s; {result.total} requests, "
        f"{result.failures} failed, by revision {dict(result.keys)}, "
        f"errors {result.errors[:3]} bad {result.bad[:3]}"
    )
    assert result.failures == 0
    assert set(result.keys) == {"1", "2"}
    ready = await ready_instances(api, name)
    assert len(ready) == 4 and {i["revision"] for i in ready} == {2}
    used = {i["address"] for i in ready}

    # Drain the busiest node under load: its instances leave the pools first,
    # then Swarm moves them; no request may fail.
    busiest = max(used, key=lambda a: sum(i["address"] == a for i in ready))
    target = addresses[busiest]
    moving = sum(i["address"] == busiest for i in ready)
    async with Load(
        daemon.proxy_port,
        daemon.host(name),
        "/cgi-bin/env",
        concurrency=4,
        key=env_value("PATRD_INSTANCE"),
    ) as load:
        await asyncio.sleep(1)
        started = time.monotonic()
        drained = await api.ok("POST", f"/v1/nodes/{target.node_id}/drain")
        drain_call_s = time.monotonic() - started
        assert drained["availability"] == "drain"

        async def moved() -> bool:
            now = await ready_instances(api, name)
            return len(now) == 4 and all(i["address"] != busiest for i in now)

        await until(moved, SETTLE_S, "4 instances ready off the drained node", daemon, 0.5)
        moved_s = time.monotonic() - started
        await asyncio.sleep(2)
    result = load.result
    print(
        f"drain of {moving} instance(s): call {drain_call_s:.1f}s, all ready elsewhere "
        f"{moved_s:.1f}s; {result.total} requests, {result.failures} failed, "
        f"statuses {dict(result.statuses)}, per slot {dict(result.keys)}, "
        f"errors {result.errors[:3]} bad {result.bad[:3]}"
    )
    assert result.total > 50
    assert result.failures == 0
    counts = {n["id"]: n["instances"] for n in (await api.ok("GET", "/v1/nodes"))["nodes"]}
    assert counts[target.node_id] == 0
    assert sorted((await each_slot_answers(daemon, name, 4)).keys()) == ["0", "1", "2", "3"]

    # The same through patrctl: `node list` shows the drained node, `node activate` reopens it.
    listed = patrctl(daemon, "node", "list")
    assert all(n.node_id[:12] in listed for n in swarm.nodes), listed
    assert any(target.address in line and " drain " in line for line in listed.splitlines())
    assert patrctl(daemon, "node", "activate", target.node_id) == (
        f"node {target.node_id[:12]} ({target.address}): active\n"
    )
    nodes = (await api.ok("GET", "/v1/nodes"))["nodes"]
    assert {n["availability"] for n in nodes} == {"active"}
    code, _ = await api.call("POST", "/v1/nodes/no-such-node/drain")
    assert code == 404

    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=SETTLE_S)
    assert not swarm.manager.docker(
        "service", "ls", "-q", "--filter", f"label=patrd.deployment={name}"
    )


def slot_container(node: SwarmNode, name: str, slot: int) -> str:
    ids = node.docker(
        "ps",
        "-q",
        "--filter",
        f"label=patrd.deployment={name}",
        "--filter",
        f"label=patrd.instance={slot}",
    ).split()
    assert len(ids) == 1, (node.address, ids)
    return ids[0]


async def test_a_volume_instance_stays_on_its_node_through_rollout_and_drain(
    swarm: Swarm, swarm_api: tuple[Daemon, Api]
) -> None:
    daemon, api = swarm_api
    addresses = {n.address: n for n in swarm.nodes}
    name = f"vol-{uuid.uuid4().hex[:6]}"
    spec = {**body(name, 2), "volumes": {"data": {"path": "/data", "size_gb": 1}}}
    await api.ok("POST", "/v1/deployments", spec)
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "2 instances ready", daemon, 0.5)
    home = {i["slot"]: i["address"] for i in await ready_instances(api, name)}
    assert sorted(home) == [0, 1]
    assert home[0] != home[1], f"both volume slots on one node: {home}"
    node0 = addresses[home[0]]
    label = swarm.manager.docker(
        "node", "inspect", "--format", "{{json .Spec.Labels}}", node0.node_id
    )
    assert f"patrd.volume.patrd.{name}.data.0" in label, label
    node0.docker("exec", slot_container(node0, name, 0), "sh", "-c", "echo kept > /data/marker")

    # A rollout (stop-first: the volume cannot be shared) keeps each slot on its node.
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
    await until(lambda: rolled_out(api, name, 2), SETTLE_S, "revision 2 out", daemon, 0.5)
    assert {i["slot"]: i["address"] for i in await ready_instances(api, name)} == home
    assert node0.docker("exec", slot_container(node0, name, 0), "cat", "/data/marker") == "kept"

    # Drained, its node keeps the instance: it waits instead of moving away from its data.
    await api.ok("POST", f"/v1/nodes/{node0.node_id}/drain")
    await asyncio.sleep(8)
    ready = await ready_instances(api, name)
    assert [i["slot"] for i in ready] == [1], ready
    services = swarm.manager.docker(
        "service", "ls", "-q", "--filter", f"label=patrd.deployment={name}"
    ).split()
    states = swarm.manager.docker(
        "service", "ps", "--format", "{{.CurrentState}} {{.Error}}", *services
    )
    assert "Pending" in states, states
    # It says which node it waits for: the status reason, the instance, one event.
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    hostname = swarm.manager.docker(
        "node", "inspect", "--format", "{{.Description.Hostname}}", node0.node_id
    )
    node = f"{hostname} ({node0.node_id[:12]})"  # hostname: the same on every test node
    waits = f"waiting for node {node}"
    assert f"instance 0 is {waits} that holds its volume data" in dep["status_reason"], dep
    assert [i["waiting_for"] for i in dep["instances"] if i["slot"] == 0] == [node], dep
    assert all(not i["waiting_for"] for i in dep["instances"] if i["slot"] == 1)
    events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
    told = [e["message"] for e in events if e["kind"] == "waiting_for_node"]
    assert told == [f"instance {name}-0 is {waits} that holds its volume data"], events
    await api.ok("POST", f"/v1/nodes/{node0.node_id}/activate")

    async def back_home() -> bool:
        now = {i["slot"]: i["address"] for i in await ready_instances(api, name)}
        return now == home

    await until(back_home, SETTLE_S, "slot 0 ready on its node again", daemon, 0.5)
    assert node0.docker("exec", slot_container(node0, name, 0), "cat", "/data/marker") == "kept"
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    assert "waiting for node" not in dep["status_reason"], dep
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=SETTLE_S)


@contextlib.contextmanager
def containers_reachable(swarm: Swarm, pool: str) -> Iterator[None]:
    """Let the root namespace reach the manager's bridge networks (the docker backend's
    instances), as it would on a real host: a route via the manager's address, and an
    accept in the manager namespace's DOCKER-USER chain. Both go with the test swarm."""
    netns = ["nsenter", f"--net=/var/run/netns/{swarm.manager.engine.netns}"]
    subprocess.run(
        [*netns, "iptables", "-w", "30", "-I", "DOCKER-USER", "-j", "ACCEPT"],
        check=True,
        timeout=60,
    )

    def route(action: str) -> None:
        with IPRoute() as ipr:
            ipr.route(action, dst=pool, gateway=swarm.manager.address)

    # pyroute2's IPRoute runs its own event loop: not on the test's running one.
    with ThreadPoolExecutor(max_workers=1) as pool_thread:
        pool_thread.submit(route, "add").result()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                pool_thread.submit(route, "del").result()


async def test_switching_from_docker_to_swarm_rolls_running_instances_over_without_failures(
    swarm: Swarm, tmp_path: Path
) -> None:
    pool = f"10.251.{swarm.subnet.network_address.packed[2]}.0/24"
    daemon = Daemon(tmp_path)
    daemon.config = {
        "docker": {"socket": swarm.manager.url, "network_pool": pool, "network_prefix": 28}
    }
    name = f"mig-{uuid.uuid4().hex[:6]}"
    with containers_reachable(swarm, pool):
        daemon.start()
        try:
            async with Api(daemon) as api:
                await api.ok("POST", "/v1/deployments", body(name, 2))
                await until(lambda: rolled_out(api, name, 1), SETTLE_S, "ready", daemon, 0.5)
                before = await ready_instances(api, name)
                assert all(i["address"].startswith(pool.rsplit(".", 2)[0]) for i in before)
            daemon.stop()  # the containers keep running

            daemon.config["engine"] = {"backend": "swarm"}
            started = time.monotonic()
            daemon.start()
            async with (
                Api(daemon) as api,
                Load(
                    daemon.proxy_port,
                    daemon.host(name),
                    "/cgi-bin/env",
                    concurrency=4,
                    key=env_value("PATRD_INSTANCE"),
                ) as load,
            ):
                nodes = {n.address for n in swarm.nodes}

                async def migrated() -> bool:
                    dep = await api.ok("GET", f"/v1/deployments/{name}")
                    now = dep["instances"]
                    return len(now) == 2 and all(i["ready"] and i["address"] in nodes for i in now)

                await until(migrated, SETTLE_S, "both instances Swarm services", daemon, 0.5)
                migrated_s = time.monotonic() - started
                await asyncio.sleep(1)
            result = load.result
            print(
                f"\ndocker → swarm: restart → 2 instances on services {migrated_s:.1f}s; "
                f"{result.total} requests, {result.failures} failed {dict(result.statuses)} "
                f"errors {result.errors[:2]} bad {result.bad[:2]}"
            )
            assert result.total > 20
            assert result.failures == 0
            plain = swarm.manager.docker(
                "ps", "-a", "--filter", f"label=patrd.deployment={name}", "--format", "{{.Names}}"
            ).split()
            assert all("." in c for c in plain), f"plain containers left: {plain}"
            async with Api(daemon) as api:
                await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
                await api.wait_gone(name, timeout=SETTLE_S)
        finally:
            daemon.stop()


async def test_a_lost_worker_leaves_the_pools_at_once_and_its_instances_come_back(
    swarm: Swarm, swarm_api: tuple[Daemon, Api]
) -> None:
    """Last in this module: it stops a worker's dockerd (teardown starts it again to clean)."""
    daemon, api = swarm_api
    addresses = {n.address: n for n in swarm.nodes}
    name = f"lost-{uuid.uuid4().hex[:6]}"
    await api.ok("POST", "/v1/deployments", body(name, 4))
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "4 instances ready", daemon, 0.5)
    ready = await ready_instances(api, name)
    on_workers = [i["address"] for i in ready if i["address"] != swarm.manager.address]
    assert on_workers, f"no instance on a worker: {ready}"
    lost = addresses[max(set(on_workers), key=on_workers.count)]
    losing = on_workers.count(lost.address)
    async with Load(
        daemon.proxy_port,
        daemon.host(name),
        "/cgi-bin/env",
        concurrency=4,
        key=env_value("PATRD_INSTANCE"),
    ) as load:
        await asyncio.sleep(1)
        started = time.monotonic()
        stop_s = await asyncio.to_thread(lost.engine.stop, 60)

        async def out_of_pool() -> bool:
            return all(i["address"] != lost.address for i in await ready_instances(api, name))

        await until(out_of_pool, 30, "the lost node's instances out of the pool", daemon, 0.2)
        out_s = time.monotonic() - started

        async def back() -> bool:
            now = await ready_instances(api, name)
            return len(now) == 4 and all(i["address"] != lost.address for i in now)

        await until(back, 30, "4 instances ready on the other nodes", daemon, 0.5)
        back_s = time.monotonic() - started
        await asyncio.sleep(1)
    result = load.result
    print(
        f"\nlost worker with {losing} instance(s): dockerd stop {stop_s:.1f}s, out of the pool "
        f"{out_s:.1f}s, all 4 ready elsewhere {back_s:.1f}s; {result.total} requests, "
        f"{result.failures} failed {dict(result.statuses)} errors {result.errors[:2]} "
        f"bad {result.bad[:2]}"
    )
    nodes = {n["id"]: n for n in (await api.ok("GET", "/v1/nodes"))["nodes"]}
    assert nodes[lost.node_id]["state"] == "down"
    assert result.total > 50
    # Only requests in flight on the lost node may fail (one per client at most):
    # the proxy fails over connections the dead node refuses (26-64 failed without).
    assert result.failures <= 4, "more than the lost node's in-flight requests"
