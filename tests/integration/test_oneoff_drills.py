"""One-offs when things go wrong: the client leaves, the daemon dies, the deployment goes."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker

HEALTH = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5, "failure_threshold": 20}


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "startup_probe": HEALTH,
        **extra,
    }


def oneoffs(name: str) -> list[str]:
    found = []
    for cid in containers_of(name):
        try:
            labels = docker_json("inspect", cid)[0]["Config"]["Labels"]
        except Exception:  # removed between listing and inspecting
            continue
        if "patrd.oneoff" in labels:
            found.append(cid)
    return found


async def test_run_is_removed_when_the_client_goes_away(daemon: Daemon, api: Api, new_name):
    name = new_name("gone")
    await api.ok("POST", "/v1/deployments", spec(name))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.post(
            f"http://patrd/v1/deployments/{name}/run",
            json={"command": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]},
        ) as resp,
    ):
        assert resp.status == 200
        first = json.loads(await resp.content.readline())
        assert first["run"].startswith("run-")
        assert json.loads(await resp.content.readline())["line"] == "tick"
        assert len(oneoffs(name)) == 1
    # the connection is closed: the one-off is stopped and removed
    await until(lambda: oneoffs(name) == [], 30, "one-off removed", daemon)
    assert len(containers_of(name)) == 1  # the instance stays


async def test_daemon_killed_during_a_job_run(daemon: Daemon, api: Api, new_name):
    name = new_name("kill")
    jobs = {"long": {"schedule": "@yearly", "command": ["sleep", "300"]}}
    await api.ok("POST", "/v1/deployments", spec(name, jobs=jobs))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    run = await api.ok("POST", f"/v1/deployments/{name}/jobs/long/run")
    await until(lambda: len(oneoffs(name)) == 1, 30, "job container", daemon)

    daemon.kill9()
    daemon.start()
    # recorded as interrupted, its container swept, the instance untouched
    got = await api.ok("GET", f"/v1/deployments/{name}/jobs/long/runs/{run['id']}")
    assert got["outcome"] == "interrupted" and got["ended_at"] is not None
    await until(lambda: oneoffs(name) == [], 30, "stale job container removed", daemon)
    assert len(containers_of(name)) == 1
    listed = await api.ok("GET", f"/v1/deployments/{name}/jobs")
    assert listed["jobs"][0]["running"] is False
    # and it can run again
    again = await api.ok("POST", f"/v1/deployments/{name}/jobs/long/run")
    assert again["id"] > run["id"]


async def test_delete_during_a_run_leaves_nothing(daemon: Daemon, api: Api, new_name):
    name = new_name("del")
    jobs = {"long": {"schedule": "@yearly", "command": ["sleep", "300"]}}
    await api.ok("POST", "/v1/deployments", spec(name, jobs=jobs))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    await api.ok("POST", f"/v1/deployments/{name}/jobs/long/run")
    await until(lambda: len(oneoffs(name)) == 1, 30, "job container", daemon)
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=90)
    await until(lambda: containers_of(name) == [], 30, "nothing left", daemon)
