"""Images reach every swarm node from the manager's node registry (issue 17).

A real 3-node swarm (tests/support/swarm.py) whose dockerds trust the bridge
subnet as an insecure (plain HTTP) registry, and NO test image loaded on any
node. patrd runs on the root namespace with the swarm backend and its node
registry listening on the bridge gateway (the manager's cluster address),
with the generated credential. The nodes are told a second name for it,
``registry.swarm_address`` (a forwarder on the gateway standing in for
"registry.example.com through patrd's proxy"): the manager pulls by
``registry.listen``, the services name ``swarm_address``. The test image is
pushed only to that registry (through a loopback forwarder, so the machine's
own dockerd needs no setting); every node that runs an instance pulls it by
digest with the credential patrd passed along with the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, free_port, running_daemon
from tests.support.registry import push_when_up, retry_while_starting
from tests.support.specs import HEALTH, node_registry_spec
from tests.support.swarm import Swarm, SwarmNode, swarm_cluster
from tests.support.tcp_forward import tcp_forward
from tests.support.waits import rolled_out, until, until_sync

# serial: three dockerds (scripts/test runs these alone).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

SETTLE_S = 300.0  # pulls on three nodes of a loaded 2-core box


@dataclass
class Rig:
    swarm: Swarm
    daemon: Daemon
    registry: str  # registry.swarm_address: where the nodes pull
    pusher: str  # a loopback forwarder to it, for the machine's Docker CLI
    docker_env: dict[str, str]  # a Docker CLI logged in at ``pusher``
    pushed: list[str]  # local tags made for pushes (removed at the end)

    def push(self, source: str, repo: str, tag: str) -> str:
        """Push a local image as ``repo:tag`` into the node registry; its manifest digest."""
        ref = f"{self.pusher}/{repo}:{tag}"
        subprocess.run(["docker", "tag", source, ref], check=True, capture_output=True)
        self.pushed.append(ref)
        push_when_up(ref, env=self.docker_env)
        inspect = subprocess.run(
            ["docker", "image", "inspect", ref], check=True, capture_output=True, text=True
        )
        digests = json.loads(inspect.stdout)[0]["RepoDigests"]
        # The image's digests in every registry it was ever pushed to: a loopback
        # port an earlier test's registry had may name another repository here.
        mine = f"{self.pusher}/{repo}@"
        return str(next(d.split("@", 1)[1] for d in digests if d.startswith(mine)))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, test_images: dict[str, str]) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("swarm-registry")
    with swarm_cluster(3, insecure_registry=True) as swarm:
        print(f"\nswarm up: {swarm.timings}")
        port = free_port()
        with contextlib.ExitStack() as stack:
            nodes_address = stack.enter_context(
                tcp_forward(swarm.gateway, port, bind=swarm.gateway)
            )
            pusher = stack.enter_context(tcp_forward(swarm.gateway, port))
            config: dict[str, dict[str, Any]] = {
                "engine": {"backend": "swarm"},
                "docker": {"socket": swarm.manager.url},
                "registry": {
                    "enabled": True,
                    "listen": f"{swarm.gateway}:{port}",
                    "swarm_address": nodes_address,
                    "webhook_listen": f"127.0.0.1:{free_port()}",
                },
            }
            daemon = stack.enter_context(running_daemon(workdir, config))
            daemon.reports.append(swarm.crash_report)
            env = {**os.environ, "DOCKER_CONFIG": str(workdir / "docker-cli")}
            password = daemon.data_dir / "registry-password"
            until_sync(password.exists, 30, "the registry credential generated", daemon)
            retry_while_starting(
                ["docker", "login", pusher, "-u", "patrd", "--password-stdin"],
                env=env,
                stdin=password.read_text(),
            )
            rig = Rig(swarm, daemon, nodes_address, pusher, env, [])
            try:
                yield rig
            finally:
                for ref in rig.pushed:
                    subprocess.run(["docker", "rmi", ref], capture_output=True, check=False)
    left = swarm.leftovers()
    assert not left, f"swarm teardown left {left}"


@pytest.fixture
async def api(rig: Rig) -> AsyncIterator[Api]:
    async with Api(rig.daemon) as client:
        yield client


def node_images(rig: Rig, repo: str) -> dict[str, list[str]]:
    """Node address → the digests of ``repo`` that node holds."""
    found = {}
    for node in rig.swarm.nodes:
        out = node.docker("image", "ls", "--digests", "--format", "{{.Repository}} {{.Digest}}")
        found[node.address] = [
            line.split()[1] for line in out.splitlines() if line.split()[0].endswith(f"/{repo}")
        ]
    return found


async def answers(rig: Rig, name: str, text: str) -> bool:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(
            f"http://127.0.0.1:{rig.daemon.proxy_port}/", headers={"Host": rig.daemon.host(name)}
        ) as resp:
            return resp.status == 200 and text in await resp.text()


async def test_nodes_pull_from_the_managers_registry_and_a_push_rolls_out_everywhere(
    rig: Rig, api: Api
) -> None:
    name = f"sr-{uuid.uuid4().hex[:6]}"
    repo = f"apps/{name}"
    v1 = rig.push("patrd-test/web:v1", repo, "stable")
    assert node_images(rig, repo) == {n.address: [] for n in rig.swarm.nodes}, "preloaded?"

    started = time.monotonic()
    spec = node_registry_spec(name, repo, scale={"min": 4, "max": 4}, startup_probe=HEALTH)
    await api.ok("POST", "/v1/deployments", spec)
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "v1 ready", rig.daemon, 0.5)
    print(f"\ncreate → 4 instances ready (pulled on the nodes): {time.monotonic() - started:.1f}s")
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    used = {i["address"] for i in dep["instances"] if i["ready"]}
    assert len(used) >= 2, f"all instances on one node: {used}"
    held = node_images(rig, repo)
    assert all(v1 in held[address] for address in used), held
    # The services name the registry digest at the nodes' address, never an image ID.
    images = rig.swarm.manager.docker(
        "service", "ls", "--filter", f"label=patrd.deployment={name}", "--format", "{{.Image}}"
    )
    assert set(images.split()) == {f"{rig.registry}/{repo}@{v1}"}, images
    assert await answers(rig, name, "hello from v1")

    started = time.monotonic()
    v2 = rig.push("patrd-test/web:v2", repo, "stable")
    await until(lambda: rolled_out(api, name, 2), SETTLE_S, "v2 rolled out", rig.daemon, 0.5)
    print(f"push v2 → rolled out on the nodes: {time.monotonic() - started:.1f}s")
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    ready = [i for i in dep["instances"] if i["ready"]]
    assert len(ready) == 4 and {i["revision"] for i in ready} == {2}, ready
    used = {i["address"] for i in ready}
    assert len(used) >= 2, f"all instances on one node: {used}"
    held = node_images(rig, repo)
    assert all(v2 in held[address] for address in used), held
    for _ in range(8):
        assert await answers(rig, name, "hello from v2")
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=120)


async def test_a_stored_registry_credential_reaches_the_nodes(rig: Rig, api: Api) -> None:
    """``registry_auth`` (a secret, as for any private registry) is what the nodes pull with."""
    name = f"sr-{uuid.uuid4().hex[:6]}"
    repo = f"apps/{name}"
    digest = rig.push("patrd-test/web:v1", repo, "stable")
    password = (rig.daemon.data_dir / "registry-password").read_text().strip()
    await api.ok("POST", "/v1/secrets", {"name": f"{name}-reg", "value": f"patrd:{password}"})
    spec = node_registry_spec(
        name,
        repo,
        scale={"min": 3, "max": 3},
        startup_probe=HEALTH,
        registry_auth={"secret": f"{name}-reg"},
    )
    await api.ok("POST", "/v1/deployments", spec)
    await until(lambda: rolled_out(api, name, 1), SETTLE_S, "ready", rig.daemon, 0.5)
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    used = {i["address"] for i in dep["instances"] if i["ready"]}
    assert len(used) >= 2, f"all instances on one node: {used}"
    held = node_images(rig, repo)
    assert all(digest in held[address] for address in used), held
    assert password not in json.dumps(dep)
    assert password not in rig.daemon.log_tail(100_000)
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=120)


async def test_a_refused_credential_is_a_status_reason_not_a_hang(rig: Rig, api: Api) -> None:
    name = f"sr-{uuid.uuid4().hex[:6]}"
    repo = f"apps/{name}"
    rig.push("patrd-test/web:v1", repo, "stable")
    await api.ok("POST", "/v1/secrets", {"name": f"{name}-reg", "value": f"patrd:not-it-{name}"})
    spec = node_registry_spec(name, repo, registry_auth={"secret": f"{name}-reg"})
    started = time.monotonic()
    await api.ok("POST", "/v1/deployments", spec)
    errored = await api.wait_status(name, "errored", timeout=90)
    print(f"\nrefused credential → errored: {time.monotonic() - started:.1f}s")
    reason = errored["status_reason"]
    # The manager pulls first (by registry.listen), with the same credential the
    # nodes would get: the refusal is reported before any service exists.
    assert f"/{repo}:stable unavailable" in reason and "unauthorized" in reason, reason
    services = rig.swarm.manager.docker(
        "service", "ls", "-q", "--filter", f"label=patrd.deployment={name}"
    )
    assert services == "", services
    assert f"not-it-{name}" not in json.dumps(errored)
    print(f"reason: {reason}")
    assert node_images(rig, repo) == {n.address: [] for n in rig.swarm.nodes}
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=60)


@contextlib.contextmanager
def unreachable_from(rig: Rig, nodes: list[SwarmNode]) -> Iterator[None]:
    """Refuse (REJECT) the nodes' connections to the registry's node address, inside
    each node's own namespace (made by this test), as a missing firewall opening would."""
    host, port = rig.registry.rsplit(":", 1)
    rule = ["OUTPUT", "-p", "tcp", "-d", host, "--dport", port, "-j", "REJECT"]

    def iptables(node: SwarmNode, *args: str) -> None:
        subprocess.run(
            [*node.engine.nsenter, "iptables", "-w", "30", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    for node in nodes:
        iptables(node, "-I", *rule)
    try:
        yield
    finally:
        for node in nodes:
            iptables(node, "-D", *rule)


async def test_a_node_that_cannot_pull_is_named_in_the_deployment_s_events(
    rig: Rig, api: Api
) -> None:
    name = f"sr-{uuid.uuid4().hex[:6]}"
    repo = f"apps/{name}"
    digest = rig.push("patrd-test/web:v1", repo, "stable")
    workers = rig.swarm.nodes[1:]
    with unreachable_from(rig, workers):
        spec = node_registry_spec(name, repo, scale={"min": 3, "max": 3}, startup_probe=HEALTH)
        started = time.monotonic()
        await api.ok("POST", "/v1/deployments", spec)

        async def pull_errors() -> list[dict[str, Any]]:
            events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
            return [e for e in events if e["kind"] == "engine_error"]

        found = await until(pull_errors, 120, "an engine_error event", rig.daemon, 0.5)
        print(f"\nnode cannot pull → event: {time.monotonic() - started:.1f}s: {found[0]}")
        message = str(found[0]["message"])
        worker_addresses = {n.address for n in workers}
        assert any(f"node {a} could not pull" in message for a in worker_addresses), message
        assert f"{rig.registry}/{repo}@{digest}" in message, message
        assert "Swarm: images on every node" in message
        # Swarm runs the instances where the image can be pulled: the manager.
        await until(lambda: rolled_out(api, name, 1), SETTLE_S, "ready on the manager", rig.daemon)
        dep = await api.ok("GET", f"/v1/deployments/{name}")
        assert {i["address"] for i in dep["instances"]} == {rig.swarm.manager.address}
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=120)
