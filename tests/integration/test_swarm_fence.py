"""The agent fences its node's published task ports: only the manager reaches them (issue 17).

A real 3-node swarm (tests/support/swarm.py). patrd runs in the root
namespace against the manager's socket, so its proxy dials every instance
from the bridge address (``swarm.gateway``): that is the ``--fence-allow``
of each node's ``patrd agent``, which runs in that node's namespace and
loads ``table inet patrd_agent`` there (nft only ever runs inside these
namespaces, never in the root one). Another source is a node's own address:
a client started inside another node's namespace.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon
from tests.support.load import env_value
from tests.support.swarm import Swarm, SwarmNode
from tests.support.swarm_patrd import AGENT_PORT, Agent, swarm_daemon
from tests.support.waits import rolled_out, until

pytestmark = [pytest.mark.docker, pytest.mark.serial]

SETTLE_S = 240.0  # create → all ready, on a loaded 2-core box
FENCE_INTERVAL_S = 0.5
FENCING = ("--fence-interval", str(FENCE_INTERVAL_S))
DIAL_TIMEOUT_S = 3.0  # a dropped SYN: the client gives up after this


def nft(node: SwarmNode, *args: str) -> subprocess.CompletedProcess[str]:
    """``nft`` inside the node's namespace (never the root one)."""
    return subprocess.run(
        [*node.engine.nsenter, "nft", *args], capture_output=True, text=True, timeout=30
    )


def fenced_ports(node: SwarmNode) -> set[int] | None:
    """The elements of the agent's port set on ``node``; None when there is no table."""
    done = nft(node, "-j", "list", "set", "inet", "patrd_agent", "published")
    if done.returncode != 0:
        return None
    sets = [i["set"] for i in json.loads(done.stdout)["nftables"] if "set" in i]
    return {int(p) for p in sets[0].get("elem", [])}


def published_ports(node: SwarmNode) -> set[int]:
    """The published TCP ports of the patrd task containers on ``node`` (from its dockerd)."""
    shown = node.docker(
        "ps", "--filter", "label=com.docker.swarm.task.id", "--format", "{{.Ports}}"
    )
    return {int(p) for p in re.findall(r":(\d+)->\d+/tcp", shown)}


# What ``dial`` prints: the status line, or why there is none.
DIAL = """
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET /cgi-bin/health HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        print(s.recv(64).split(b"\\r\\n")[0].decode())
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


def dial(source: SwarmNode | None, address: str, port: int) -> str:
    """Connect to ``address:port`` from ``source``'s namespace (None: the root one, i.e.
    from ``swarm.gateway``, where patrd runs) and send a GET: the status line or why not."""
    prefix = source.engine.nsenter if source is not None else []
    done = subprocess.run(
        [*prefix, sys.executable, "-c", DIAL, address, str(port), str(DIAL_TIMEOUT_S)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def fenced_counter(node: SwarmNode) -> int:
    done = nft(node, "-j", "list", "counter", "inet", "patrd_agent", "fenced")
    assert done.returncode == 0, done.stderr
    return int(re.findall(r'"packets":\s*(\d+)', done.stdout)[0])


@pytest.fixture
async def cluster(
    swarm: Swarm, tmp_path: Path
) -> AsyncIterator[tuple[Daemon, Api, dict[int, Agent], Path]]:
    agents: dict[int, Agent] = {}
    async with swarm_daemon(swarm, tmp_path) as (daemon, api):
        try:
            token = tmp_path / "agent.token"
            shutil.copy(daemon.data_dir / "agent.token", token)
            for node in swarm.nodes:  # the manager's node fences its tasks too
                log = tmp_path / f"agent-{node.index}.log"
                agents[node.index] = Agent(
                    node, token, log, *FENCING, "--fence-allow", swarm.gateway
                )
            yield daemon, api, agents, token
        finally:
            for agent in agents.values():
                agent.stop()
            for node in swarm.nodes:  # the table outlives the agent (by design): clean up here
                nft(node, "delete", "table", "inet", "patrd_agent")


async def proxied(daemon: Daemon, name: str, slots: int) -> dict[str, int]:
    """GET through patrd's proxy until every slot answered; all must be 200."""
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


def spec(name: str, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "scale": {"min": replicas, "max": replicas},
        "startup_probe": {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5},
    }


async def test_published_ports_answer_only_the_allowed_source(
    swarm: Swarm, cluster: tuple[Daemon, Api, dict[int, Agent], Path]
) -> None:
    daemon, api, agents, token = cluster
    for agent in agents.values():
        assert "fence_loaded" in agent.log(), agent.log()
        assert "published_ports_open" not in agent.log()
    name = f"fe-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    await api.ok("POST", "/v1/deployments", spec(name, 3))
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "3 instances ready", daemon, 0.5)
    print(f"\ncreate → 3 instances ready: {time.monotonic() - started:.1f}s")
    instances = (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
    homes = [n for n in swarm.nodes if n.address in {i["address"] for i in instances}]
    workers = [n for n in homes if n is not swarm.manager]
    assert workers, f"no instance on a worker: {[i['address'] for i in instances]}"
    worker = workers[0]
    other = next(n for n in swarm.nodes if n is not worker)  # another node: not allowed
    ports = published_ports(worker)
    assert ports, worker.docker("ps")

    # The agent's set follows the node's tasks (every node: the manager's too).
    for node in homes:
        want = published_ports(node)

        def caught_up(node: SwarmNode = node, want: set[int] = want) -> bool:
            return fenced_ports(node) == want

        await until(caught_up, 30, f"node {node.index}'s set of published ports")
    port = min(ports)

    # The manager's patrd (from the gateway) is served: through the proxy, and directly.
    assert sorted(await proxied(daemon, name, 3)) == ["0", "1", "2"]
    assert dial(None, worker.address, port) == "HTTP/1.1 200 OK"

    # Anyone else: the SYN is dropped (counted), the client times out.
    before = fenced_counter(worker)
    t0 = time.monotonic()
    assert dial(other, worker.address, port) == "timeout"
    assert time.monotonic() - t0 >= DIAL_TIMEOUT_S * 0.9
    assert fenced_counter(worker) > before
    # ...while everything else on the worker answers the same source (the agent's port).
    assert dial(other, worker.address, AGENT_PORT).split()[1] == "401"
    # A client on the worker itself (a local source, as patrd on the manager's node) passes.
    assert dial(worker, worker.address, port) == "HTTP/1.1 200 OK"

    # The agent stops: the table stays, the port stays fenced (fail closed), the
    # manager is still served.
    agents[worker.index].stop()
    assert fenced_ports(worker) == ports
    assert dial(other, worker.address, port) == "timeout"
    assert sorted(await proxied(daemon, name, 3)) == ["0", "1", "2"]

    # An agent started without --fence-allow removes the fence and says the ports are open:
    # the same connection from the same source is answered (the check above could fail).
    agents[worker.index] = Agent(worker, token, agents[worker.index].log_path, *FENCING)
    assert "published_ports_open" in agents[worker.index].log()
    assert fenced_ports(worker) is None
    assert dial(other, worker.address, port) == "HTTP/1.1 200 OK"
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
