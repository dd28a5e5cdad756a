"""Config files on the swarm backend: Swarm configs, readable on every node (issue 17).

A real 3-node swarm (tests/support/swarm.py); each instance's file is read
inside its container on the node that runs it.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest

from tests.support.daemon import Api, Daemon
from tests.support.swarm import Swarm, SwarmNode
from tests.support.waits import rolled_out, until

pytestmark = [pytest.mark.docker, pytest.mark.serial]

SETTLE_S = 240.0  # generous: a loaded 2-core box


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def container_of(node: SwarmNode, name: str, slot: int) -> str:
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


def configs_of(swarm: Swarm, name: str) -> list[str]:
    out = swarm.manager.docker(
        "config", "ls", "--format", "{{.Name}}", "--filter", f"label=patrd.deployment={name}"
    )
    return sorted(out.split())


async def files_seen(swarm: Swarm, api: Api, name: str) -> dict[str, tuple[str, str]]:
    """Node address → (the file's content, its mode) in each ready instance."""
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    seen = {}
    for inst in dep["instances"]:
        if not inst["ready"]:
            continue
        node = swarm.node_by_address(inst["address"])
        container = container_of(node, name, inst["slot"])
        content = node.docker("exec", container, "cat", "/etc/config/app.conf")
        mode = node.docker(
            "exec",
            container,
            "sh",
            "-c",
            "stat -c %a /etc/config/app.conf; "
            "(echo x > /etc/config/app.conf) 2>/dev/null && echo writable || echo read-only",
        )
        seen[f"{inst['address']}/{inst['slot']}"] = (content, mode.replace("\n", " "))
    return seen


async def test_config_files_reach_every_node_and_follow_rollouts(
    swarm: Swarm, swarm_api: tuple[Daemon, Api]
) -> None:
    daemon, api = swarm_api
    name = f"cf-{uuid.uuid4().hex[:6]}"
    spec: dict[str, Any] = {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "scale": {"min": 3, "max": 3},
        "startup_probe": {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5},
        "config_mounts": {"app.conf": b64("greeting=one")},
    }
    started = time.monotonic()
    await api.ok("POST", "/v1/deployments", spec)
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "3 instances ready", daemon, 0.5)
    print(f"\ncreate → 3 ready: {time.monotonic() - started:.1f}s")
    seen = await files_seen(swarm, api, name)
    nodes = {key.split("/")[0] for key in seen}
    assert len(seen) == 3 and len(nodes) >= 2, seen
    assert nodes - {swarm.manager.address}, f"no instance on a worker: {seen}"
    assert set(seen.values()) == {("greeting=one", "644 read-only")}, seen
    first = configs_of(swarm, name)
    assert len(first) == 1, first  # one config per content, shared by the three services

    # A changed file is a new config; the rollout's tasks mount it, the old one goes.
    started = time.monotonic()
    await api.ok(
        "PATCH", f"/v1/deployments/{name}", {"config_mounts": {"app.conf": b64("greeting=two")}}
    )
    await until(lambda: rolled_out(api, name, 2), SETTLE_S, "revision 2 out", daemon, 0.5)
    print(f"config change → rolled out: {time.monotonic() - started:.1f}s")
    seen = await files_seen(swarm, api, name)
    assert len(seen) == 3 and set(seen.values()) == {("greeting=two", "644 read-only")}, seen
    second = configs_of(swarm, name)
    assert len(second) == 1 and second != first, (first, second)

    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=SETTLE_S)
    assert configs_of(swarm, name) == []
