"""Isolation between deployments, with the real Docker engine.

* On the machine's engine (root namespace, patrd's firewall off): Docker's
  own isolation of user-defined bridges already keeps deployment A's
  containers from connecting to deployment B's, while A's instances reach
  each other. patrd relies on it.
* On a private engine inside a test namespace, with patrd's firewall on:
  the same, plus patrd's rules (defence in depth: the forward chain drops
  bridge-to-bridge traffic before Docker's chains), no container reaches
  the API's TCP port or a link-local metadata address (169.254.169.254 is
  made real in the namespace), the table comes back when deleted, survives
  a Docker restart, and ``GET /v1/firewall`` / ``patrctl firewall show``
  show it with moving counters.

Connections are made from inside containers with busybox ``nc``; each one is
bounded by ``nc -w``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Api, Daemon
from tests.support.netns import in_ns, listener_in
from tests.support.private_docker import PrivateDocker, private_docker
from tests.support.waits import until

pytestmark = pytest.mark.docker

WEB = {"image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}
METADATA = "169.254.169.254"
API_PORT = 7070
CONTROL_PORT = 8099  # a host service the firewall opens (firewall.allow_tcp)


async def sh(*argv: str, timeout: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


# busybox nc exits as soon as its stdin ends (and exits 0 on a connect
# timeout), so stdin stays open for a moment while the answer comes back. An
# answer proves a connection; a missing one is backed by a drop counter
# (patrd's firewall) or a control probe that does get an answer.
PROBE = "(printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'; sleep 0.7) | {nc} -w 1 {ip} {port}"


async def reaches(docker: list[str], container: str, ip: str, port: int) -> bool:
    """From inside ``container``: does ``ip:port`` answer an HTTP request?"""
    script = PROBE.format(path="/", nc="nc", ip=ip, port=port)
    _, out = await sh(*docker, "exec", container, "sh", "-c", script)
    return "HTTP/1." in out


async def reaches_soon(docker: list[str], container: str, ip: str, port: int) -> bool:
    """``reaches``, tried up to 3 times (a loaded machine can be slow to answer)."""
    for _ in range(3):
        if await reaches(docker, container, ip, port):
            return True
    return False


async def host_gets(nsenter: list[str], ip: str, port: int, path: str = "/") -> str:
    """The answer to a GET from the namespace's host itself (not a container)."""
    script = PROBE.format(path=path, nc="busybox nc", ip=ip, port=port)
    out = ""
    for _ in range(3):
        _, out = await sh(*nsenter, "busybox", "sh", "-c", script)
        if " 200 OK" in out:
            break
    return out


async def inspect(docker: list[str], container: str) -> dict[str, Any]:
    code, out = await sh(*docker, "inspect", container)
    assert code == 0, out
    return dict(json.loads(out)[0])


async def deploy(api: Api, name: str, replicas: int) -> list[dict[str, Any]]:
    await api.ok(
        "POST", "/v1/deployments", {"name": name, **WEB, "scale": {"min": replicas, "max": 3}}
    )
    shown = await api.wait_status(name, "running", timeout=60)
    instances = [i for i in shown["instances"] if i["ready"]]
    assert len(instances) == replicas
    return instances


async def test_docker_keeps_deployments_apart(daemon: Daemon, api: Api, new_name) -> None:
    """The machine's engine, firewall off: what patrd gets from Docker alone."""
    a, b = new_name("isoa"), new_name("isob")
    a0, a1 = await deploy(api, a, 2)
    [b0] = await deploy(api, b, 1)
    docker = ["docker"]
    assert await reaches_soon(docker, a0["container_id"], a1["address"], 80)  # own instances
    assert await reaches_soon(docker, b0["container_id"], b0["address"], 80)  # B itself is up
    assert not await reaches(docker, a0["container_id"], b0["address"], 80)
    assert not await reaches(docker, b0["container_id"], a1["address"], 80)


@pytest.fixture
def engine(test_images: dict[str, str]):
    with private_docker(live_restore=True, images=(test_images["v1"],)) as e:
        yield e


async def test_firewall_fences_containers_in_a_namespace(
    tmp_path: Path, engine: PrivateDocker
) -> None:
    ns = engine.netns
    # A link-local "metadata service" and a plain host service, both real.
    in_ns(ns, "ip", "addr", "add", f"{METADATA}/32", "dev", "lo")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nhost service\n")
        await writer.drain()
        writer.close()

    servers = [
        await asyncio.start_server(answer, sock=listener_in(ns, METADATA, 80)),
        await asyncio.start_server(answer, sock=listener_in(ns, "0.0.0.0", CONTROL_PORT)),
    ]
    token = tmp_path / "token"
    token.write_text("t" * 32)
    daemon = Daemon(
        tmp_path,
        command_prefix=engine.nsenter,
        config={
            "docker": {"socket": engine.url},
            "api": {"tcp_listen": f"0.0.0.0:{API_PORT}", "token_file": str(token)},
            "firewall": {
                "enabled": True,
                "check_interval_s": 0.5,
                "allow_tcp": [CONTROL_PORT],
            },
        },
    )
    daemon.start()
    docker = ["docker", "-H", engine.url]
    try:
        async with Api(daemon) as api:
            a0, a1 = await deploy(api, "alpha", 2)
            [b0] = await deploy(api, "beta", 1)
            nets = (await inspect(docker, a0["container_id"]))["NetworkSettings"]["Networks"]
            gateway = next(iter(nets.values()))["Gateway"]
            bridges = _bridges(engine)
            assert len(bridges) == 2
            await _wait_firewall(api, lambda fw: all(f'"{b}"' in fw["ruleset"] for b in bridges))

            # Controls: the services are up and a container can reach the host.
            assert await reaches_soon(docker, a0["container_id"], a1["address"], 80)
            assert await reaches_soon(docker, a0["container_id"], gateway, CONTROL_PORT)
            assert "host service" in await host_gets(engine.nsenter, METADATA, 80)
            health = await host_gets(engine.nsenter, gateway, API_PORT, "/v1/health")
            assert '"status": "ok"' in health, health  # the host itself reaches its API

            before = (await api.ok("GET", "/v1/firewall"))["counters"]
            a, b = a0["container_id"], b0["container_id"]
            assert not await reaches(docker, a, b0["address"], 80)
            assert not await reaches(docker, b, a0["address"], 80)
            mid = (await api.ok("GET", "/v1/firewall"))["counters"]
            assert mid["isolation_denied"]["packets"] >= before["isolation_denied"]["packets"] + 2
            assert not await reaches(docker, a, gateway, API_PORT)
            assert not await reaches(docker, a, METADATA, 80)
            after = (await api.ok("GET", "/v1/firewall"))["counters"]
            assert after["container_denied"]["packets"] >= mid["container_denied"]["packets"] + 2

            # The table comes back within a check interval when someone deletes it.
            loads = (await api.ok("GET", "/v1/firewall"))["loads"]
            in_ns(ns, "nft", "delete", "table", "inet", "patrd")
            firewall = await _wait_firewall(api, lambda fw: fw["applied"] and fw["loads"] > loads)
            assert firewall["loads"] == loads + 1
            assert not await reaches(docker, a0["container_id"], gateway, API_PORT)

            # Docker restarts (live-restore keeps the containers): the fence holds.
            await asyncio.to_thread(engine.stop)
            await asyncio.to_thread(engine.start)
            await api.wait_status("alpha", "running", timeout=60)
            firewall = await _wait_firewall(api, lambda fw: fw["applied"])
            assert all(f'"{b}"' in firewall["ruleset"] for b in bridges)
            assert await reaches_soon(docker, a0["container_id"], a1["address"], 80)
            assert not await reaches(docker, a0["container_id"], b0["address"], 80)

            # patrctl prints the same ruleset, loadable with nft -f, counters as comments.
            code, out = await sh(
                sys.executable, "-m", "patrd.cli.main", "--socket", str(daemon.socket),
                "firewall", "show",
            )  # fmt: skip
            assert code == 0, out
            assert out.startswith("# firewall: enabled and loaded")
            assert "table inet patrd {" in out and "#   isolation_denied" in out
            rules = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
            check = await asyncio.create_subprocess_exec(
                *engine.nsenter, "nft", "-c", "-f", "-", stdin=asyncio.subprocess.PIPE
            )
            await check.communicate(rules.encode())
            assert check.returncode == 0
    finally:
        daemon.stop()
        for server in servers:
            server.close()
    assert "firewall.applied" in daemon.log_path.read_text()


def _bridges(engine: PrivateDocker) -> list[str]:
    out = engine.docker("network", "ls", "-q", "--filter", "label=patrd.managed").stdout.split()
    return [f"br-{network_id[:12]}" for network_id in out]


async def _wait_firewall(api: Api, ok, timeout: float = 15) -> dict[str, Any]:
    async def as_expected() -> dict[str, Any] | None:
        shown: dict[str, Any] = await api.ok("GET", "/v1/firewall")
        return shown if shown["enabled"] and ok(shown) else None

    found: dict[str, Any] = await until(as_expected, timeout, "the firewall as expected")
    return found
