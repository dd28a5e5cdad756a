"""Container hardening on the real Docker engine: what a deployment's container gets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from patrd.engine.hardening import DEFAULT_CAPABILITIES
from tests.support.daemon import Api, Daemon, containers_of

pytestmark = pytest.mark.docker

# Linux capability bits (include/uapi/linux/capability.h).
CAP_BITS = {"CHOWN": 0, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_ADMIN": 21, "MKNOD": 27}


@pytest.fixture
def small_pids_daemon(
    tmp_path: Path, test_images: dict[str, str], names: list[str]
) -> Iterator[Daemon]:
    d = Daemon(tmp_path, config={"docker": {"pids_limit": 64}})
    d.start()
    try:
        yield d
    finally:
        d.stop()


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=60
    ).stdout


async def test_containers_run_hardened_and_still_serve(small_pids_daemon: Daemon, new_name) -> None:
    daemon = small_pids_daemon
    name = new_name("hard")
    async with Api(daemon) as api:
        await api.ok(
            "POST",
            "/v1/deployments",
            {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
        )
        await api.wait_status(name, "running")
    # busybox httpd, root in the container, binds port 80 with the kept capabilities.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": daemon.host(name)}
        ) as response,
    ):
        assert response.status == 200
        assert "hello from v1" in await response.text()

    [cid] = containers_of(name)
    host = json.loads(docker("inspect", cid))[0]["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert sorted(c.removeprefix("CAP_") for c in host["CapAdd"]) == sorted(DEFAULT_CAPABILITIES)
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["PidsLimit"] == 64
    assert host["Privileged"] is False
    mounts = json.loads(docker("inspect", "--format", "{{json .Mounts}}", cid))
    assert not any("docker.sock" in str(m) for m in mounts)
    assert not host.get("Binds")

    status = docker("exec", cid, "cat", "/proc/1/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    effective = int(fields["CapEff"], 16)
    assert effective & (1 << CAP_BITS["NET_BIND_SERVICE"])
    assert effective & (1 << CAP_BITS["CHOWN"])
    for cap in ("NET_RAW", "SYS_ADMIN", "MKNOD"):
        assert not effective & (1 << CAP_BITS[cap]), cap

    # A fork bomb stops at the pids limit (80 background sleeps > 64 pids).
    out = subprocess.run(
        [
            "docker", "exec", cid, "sh", "-c",
            "n=0; while [ $n -lt 80 ]; do sleep 1 & n=$((n+1)); done; wait",
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert "can't fork" in out.stdout + out.stderr
