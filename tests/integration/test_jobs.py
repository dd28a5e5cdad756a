"""Scheduled jobs on the real engine: schedule, no overlap, exit codes, timeouts, history."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from typing import Any

import pytest

from tests.support.daemon import Api, Daemon, containers_of, patrctl
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


def spec(name: str, jobs: dict[str, Any]) -> dict[str, Any]:
    return web_spec(name, env={"GREETING": "from-job"}, jobs=jobs)


async def runs_of(api: Api, name: str, job: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/v1/deployments/{name}/jobs/{job}/runs"))["runs"])


async def events_of(api: Api, name: str) -> list[dict[str, Any]]:
    data = await api.ok("GET", f"/v1/deployments/{name}/events?limit=1000")
    return list(data["events"])


async def test_every_5s_runs_twice_never_overlapping(daemon: Daemon, api: Api, new_name) -> None:
    name = new_name("job")
    # Each run takes 7 s, longer than the interval: the due time that comes
    # while it runs is skipped, never a second run beside it.
    tick = {"schedule": "@every 5s", "command": ["sh", "-c", "echo $GREETING; sleep 7; exit 3"]}
    await api.ok("POST", "/v1/deployments", spec(name, {"tick": tick}))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    # (a run may have started already: the instance is what the API lists)
    [instance] = [i["container_id"] for i in await instances_of(api, name)]

    listed = await api.ok("GET", f"/v1/deployments/{name}/jobs")
    assert [j["name"] for j in listed["jobs"]] == ["tick"] and listed["time_zone"]
    assert listed["jobs"][0]["next_run"] is not None

    async def two_finished() -> list[dict[str, Any]] | None:
        runs = await runs_of(api, name, "tick")
        done = [r for r in runs if r["outcome"] != "running"]
        return runs if len(done) >= 2 else None

    runs = await until(two_finished, 120, "two finished runs", daemon, interval=0.5)
    finished = sorted((r for r in runs if r["outcome"] != "running"), key=lambda r: r["id"])
    assert [(r["exit_code"], r["outcome"], r["trigger"]) for r in finished[:2]] == [
        (3, "failed", "schedule"),
        (3, "failed", "schedule"),
    ]
    ordered = sorted(runs, key=lambda r: r["started_at"])
    for before, after in itertools.pairwise(ordered):
        assert before["ended_at"] is not None and before["ended_at"] <= after["started_at"], runs
    for run in finished:
        assert run["duration_s"] >= 6.5, run

    # while a run is going, run-now is refused
    await until(lambda: api_running(api, name), 20, "a run in progress", daemon, interval=0.2)
    status, error = await api.call("POST", f"/v1/deployments/{name}/jobs/tick/run")
    assert status == 409 and "running" in error["message"]

    # output kept with the run; a job.failed event per failed run
    one = await api.ok("GET", f"/v1/deployments/{name}/jobs/tick/runs/{finished[0]['id']}")
    assert [line["line"] for line in one["log"]] == ["from-job"]
    failed = [e for e in await events_of(api, name) if e["kind"] == "job.failed"]
    assert len(failed) >= 2 and "exit code 3" in failed[0]["message"]
    # one-offs never show up as instances and are removed after their run
    assert [i["container_id"] for i in await instances_of(api, name)] == [instance]


async def instances_of(api: Api, name: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/v1/deployments/{name}/instances"))["instances"])


async def api_running(api: Api, name: str) -> bool:
    listed = await api.ok("GET", f"/v1/deployments/{name}/jobs")
    return bool(listed["jobs"][0]["running"])


async def test_timeout_kills_and_is_recorded(daemon: Daemon, api: Api, new_name) -> None:
    name = new_name("jto")
    jobs = {
        # 1 January at midnight: only run by hand here
        "slow": {"schedule": "0 0 1 1 *", "command": ["sleep", "60"], "timeout_s": 2},
        "quick": {
            "schedule": "@yearly",
            "command": ["sh", "-c", "echo out; echo err >&2"],
        },
    }
    await api.ok("POST", "/v1/deployments", spec(name, jobs))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    [instance] = containers_of(name)

    started = await api.ok("POST", f"/v1/deployments/{name}/jobs/slow/run")
    assert started["outcome"] == "running" and started["trigger"] == "manual"
    ok = await api.ok("POST", f"/v1/deployments/{name}/jobs/quick/run")

    async def ended(job: str, run_id: int) -> dict[str, Any] | None:
        run = await api.ok("GET", f"/v1/deployments/{name}/jobs/{job}/runs/{run_id}")
        return dict(run) if run["outcome"] != "running" else None

    slow = await until(lambda: ended("slow", started["id"]), 30, "slow run ended", daemon)
    assert slow["outcome"] == "timeout" and slow["exit_code"] != 0
    # killed by its signal (sleep 60 would have exited 0 a minute later)
    assert slow["exit_code"] in (137, 143) and slow["duration_s"] >= 2, slow
    assert "timeout of 2s" in slow["message"]
    quick = await until(lambda: ended("quick", ok["id"]), 30, "quick run ended", daemon)
    assert (quick["outcome"], quick["exit_code"]) == ("ok", 0)
    assert sorted((line["stream"], line["line"]) for line in quick["log"]) == [
        ("stderr", "err"),
        ("stdout", "out"),
    ]
    kinds = [e["kind"] for e in await events_of(api, name)]
    assert "job.failed" in kinds and "job.ok" in kinds
    await until(lambda: containers_of(name) == [instance], 30, "one-offs removed", daemon)

    # the CLI: list and history
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return patrctl(daemon, *args)

    listed = await asyncio.to_thread(cli, "job", "list", name)
    assert listed.returncode == 0 and "slow" in listed.stdout and "timeout" in listed.stdout
    history = await asyncio.to_thread(cli, "job", "history", name)
    assert history.returncode == 0, history.stderr
    assert "timeout" in history.stdout and "ok" in history.stdout
    missing = await asyncio.to_thread(cli, "job", "run-now", name, "nope")
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr

    # a bad schedule is refused with the field path
    status, error = await api.call(
        "PATCH",
        f"/v1/deployments/{name}",
        {"jobs": {"x": {"schedule": "61 * * * *", "command": ["true"]}}},
    )
    assert status == 422 and error["field"] == "jobs.x.schedule", error
