"""One-offs when things go wrong: the client leaves, the daemon dies, the deployment goes."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


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
    await api.ok("POST", "/v1/deployments", web_spec(name))
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


async def test_daemon_killed_during_job_runs(daemon: Daemon, api: Api, new_name):
    """A run whose container outlives the daemon is adopted and ends as it would have;
    one whose container vanished meanwhile is recorded as interrupted."""
    name = new_name("kill")
    jobs = {
        "outlive": {
            "schedule": "@yearly",
            "command": ["sh", "-c", "echo before; sleep 6; echo after; exit 4"],
        },
        "vanish": {"schedule": "@yearly", "command": ["sleep", "300"]},
    }
    await api.ok("POST", "/v1/deployments", web_spec(name, jobs=jobs))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    outlive = await api.ok("POST", f"/v1/deployments/{name}/jobs/outlive/run")
    vanish = await api.ok("POST", f"/v1/deployments/{name}/jobs/vanish/run")
    await until(lambda: len(oneoffs(name)) == 2, 30, "two job containers", daemon)

    daemon.kill9()
    for cid in oneoffs(name):
        if docker_json("inspect", cid)[0]["Config"]["Labels"]["patrd.oneoff"] == (
            f"job-{vanish['id']}"
        ):
            subprocess.run(["docker", "rm", "-f", cid], check=True, capture_output=True)
    daemon.start()

    async def ended(job: str, run_id: int) -> dict[str, Any] | None:
        run = await api.ok("GET", f"/v1/deployments/{name}/jobs/{job}/runs/{run_id}")
        return dict(run) if run["outcome"] != "running" else None

    gone = await until(lambda: ended("vanish", vanish["id"]), 30, "vanished run ended", daemon)
    assert gone["outcome"] == "interrupted" and gone["exit_code"] is None
    done = await until(lambda: ended("outlive", outlive["id"]), 60, "adopted run ended", daemon)
    assert (done["outcome"], done["exit_code"]) == ("failed", 4), done
    assert done["duration_s"] >= 6 and [x["line"] for x in done["log"]] == ["before", "after"]
    await until(lambda: oneoffs(name) == [], 30, "job containers removed", daemon)
    assert len(containers_of(name)) == 1  # the instance was adopted, untouched
    listed = await api.ok("GET", f"/v1/deployments/{name}/jobs")
    assert not any(j["running"] for j in listed["jobs"])
    again = await api.ok("POST", f"/v1/deployments/{name}/jobs/vanish/run")
    assert again["id"] > vanish["id"]


async def test_delete_during_a_run_leaves_nothing(daemon: Daemon, api: Api, new_name):
    name = new_name("del")
    jobs = {"long": {"schedule": "@yearly", "command": ["sleep", "300"]}}
    await api.ok("POST", "/v1/deployments", web_spec(name, jobs=jobs))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    await api.ok("POST", f"/v1/deployments/{name}/jobs/long/run")
    await until(lambda: len(oneoffs(name)) == 1, 30, "job container", daemon)
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=90)
    await until(lambda: containers_of(name) == [], 30, "nothing left", daemon)


async def test_sigterm_leaves_a_job_running_for_the_next_daemon(daemon: Daemon, api: Api, new_name):
    name = new_name("term")
    jobs = {"upgrade": {"schedule": "@yearly", "command": ["sh", "-c", "sleep 25; exit 2"]}}
    await api.ok("POST", "/v1/deployments", web_spec(name, jobs=jobs))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    run = await api.ok("POST", f"/v1/deployments/{name}/jobs/upgrade/run")
    await until(lambda: len(oneoffs(name)) == 1, 30, "job container", daemon)
    [container] = oneoffs(name)

    assert daemon.stop() == 0  # SIGTERM: containers keep running, job runs too
    assert docker_json("inspect", container)[0]["State"]["Running"] is True
    daemon.start()
    got = await api.ok("GET", f"/v1/deployments/{name}/jobs/upgrade/runs/{run['id']}")
    assert got["outcome"] == "running"  # adopted, not interrupted
    listed = await api.ok("GET", f"/v1/deployments/{name}/jobs")
    assert listed["jobs"][0]["running"] is True

    async def ended() -> dict[str, Any] | None:
        one = await api.ok("GET", f"/v1/deployments/{name}/jobs/upgrade/runs/{run['id']}")
        return dict(one) if one["outcome"] != "running" else None

    done = await until(ended, 90, "adopted run ended", daemon)
    assert (done["outcome"], done["exit_code"]) == ("failed", 2)
    await until(lambda: oneoffs(name) == [], 30, "job container removed", daemon)
