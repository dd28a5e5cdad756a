"""Probes and zero-downtime rollouts on the real engine, under load through the proxy."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json
from tests.support.load import Load, env_value, rollout_under_load
from tests.support.specs import HEALTH, web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


def body(name: str, replicas: int = 3, **extra: Any) -> dict[str, Any]:
    return web_spec(name, replicas, **extra)


def revisions_running(name: str) -> list[str]:
    """The revision label of each of the deployment's containers (retried when one
    disappears between listing and inspecting it, as during a rollout)."""
    for _ in range(20):
        ids = containers_of(name)
        if not ids:
            return []
        try:
            return sorted(
                c["Config"]["Labels"]["patrd.revision"] for c in docker_json("inspect", *ids)
            )
        except subprocess.CalledProcessError:
            time.sleep(0.05)
    raise AssertionError(f"containers of {name} kept changing")


async def test_rollout_under_load_drops_nothing(daemon: Daemon, api: Api, new_name):
    name = new_name("roll")
    await api.ok("POST", "/v1/deployments", body(name))
    await api.wait_status(name, "running")
    await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
    result, took = await rollout_under_load(daemon, api, name)
    assert set(result.keys) == {"1", "2"}
    assert revisions_running(name) == ["2", "2", "2"]
    history = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"]
    assert [(h["revision"], h["state"]) for h in history] == [(2, "deployed"), (1, "superseded")]
    print(
        f"rollout of 3 instances in {took:.1f}s; served {dict(result.keys)}; "
        f"p99 {result.percentile(0.99):.1f} ms"
    )


async def test_failed_rollout_keeps_the_old_revision_serving(daemon: Daemon, api: Api, new_name):
    name = new_name("bad")
    await api.ok("POST", "/v1/deployments", body(name))
    await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
    before = containers_of(name)
    async with Load(
        daemon.proxy_port, daemon.host(name), "/cgi-bin/env", key=env_value("PATRD_REVISION")
    ) as load:
        await asyncio.sleep(0.5)
        await api.ok(
            "PATCH",
            f"/v1/deployments/{name}",
            {
                "env": {"UNHEALTHY": "1"},  # the new instances never pass their startup probe
                "startup_probe": {**HEALTH, "failure_threshold": 4},
            },
        )

        async def failed() -> dict[str, Any] | None:
            history = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"]
            return next((h for h in history if h["revision"] == 2 and h["state"] == "failed"), None)

        entry = await until(failed, 60, "revision 2 marked failed", daemon)
        assert "startup probe" in entry["reason"]
        dep = await api.wait_status(name, "running")
        assert dep["revision"] == 1 and dep["stable_revision"] == 1
        await until(
            lambda: asyncio.sleep(0, result=containers_of(name) == before),
            30,
            "only the old containers left",
            daemon,
        )
        await asyncio.sleep(0.5)
    result = load.result
    assert result.errors == [] and result.failures == 0, (result.errors[:5], result.bad)
    assert set(result.keys) == {"1"}, result.keys
    events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
    assert any(e["kind"] == "rollout_failed" for e in events), events


async def test_long_request_in_flight_during_drain_completes(daemon: Daemon, api: Api, new_name):
    name = new_name("drain")
    await api.ok("POST", "/v1/deployments", body(name, replicas=1))
    await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
    [old] = containers_of(name)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"http://127.0.0.1:{daemon.proxy_port}/cgi-bin/slow",
            headers={"Host": daemon.host(name)},
        ) as resp:
            assert resp.status == 200
            first = await resp.content.readline()
            await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
            rest = await resp.read()
    lines = (first + rest).decode().splitlines()
    assert len(lines) == 5, lines
    await until(lambda: rolled_out(api, name, 2), 30, "revision 2 deployed", daemon)
    assert old not in containers_of(name)


async def test_liveness_failure_leaves_the_pool_before_restart(daemon: Daemon, api: Api, new_name):
    name = new_name("live")
    liveness = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.3, "failure_threshold": 2}
    await api.ok(
        "POST",
        "/v1/deployments",
        body(
            name,
            replicas=2,
            liveness_probe=liveness,
            startup_probe={**HEALTH, "failure_threshold": 6},
        ),
    )
    await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
    instances = (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
    victim = instances[0]["container_id"]
    async with Load(daemon.proxy_port, daemon.host(name), "/") as load:
        await asyncio.sleep(0.5)
        subprocess.run(["docker", "exec", victim, "touch", "/tmp/unhealthy"], check=True)

        async def restarted() -> bool:
            events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
            kinds = [e["kind"] for e in events]
            return "unhealthy" in kinds and "restart" in kinds

        await until(restarted, 30, "unhealthy instance restarted", daemon)

        async def all_ready() -> bool:
            shown = await api.ok("GET", f"/v1/deployments/{name}")
            instances = shown["instances"]
            return len(instances) == 2 and all(
                i["ready"] and i["probe"]["phase"] == "ready" for i in instances
            )

        # /tmp/unhealthy survives a restart, so the restarted container fails its
        # startup probe and is replaced by a fresh one: both ready again.
        await until(all_ready, 60, "both instances ready again", daemon)
        await asyncio.sleep(0.5)
    result = load.result
    assert result.errors == [] and result.failures == 0, (result.errors[:5], result.bad)
    events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.index("unhealthy") < kinds.index("restart")
    assert victim not in containers_of(name), "the unhealthy container was replaced"


async def test_revert_restores_the_exact_image(daemon: Daemon, api: Api, new_name):
    name = new_name("rev")
    tag = f"moving-{name}"
    repo = "patrd-test/web"
    v1_id = docker_json("image", "inspect", f"{repo}:v1")[0]["Id"]
    v2_id = docker_json("image", "inspect", f"{repo}:v2")[0]["Id"]
    subprocess.run(["docker", "tag", f"{repo}:v1", f"{repo}:{tag}"], check=True)
    try:
        await api.ok("POST", "/v1/deployments", {**body(name, replicas=1), "tag": tag})
        await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
        # the tag moves to v2: a settings change keeps the pinned v1 ...
        subprocess.run(["docker", "tag", f"{repo}:v2", f"{repo}:{tag}"], check=True)
        await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
        await until(lambda: rolled_out(api, name, 2), 30, "revision 2 deployed", daemon)
        [cid] = containers_of(name)
        assert docker_json("inspect", cid)[0]["Image"] == v1_id
        # ... and redeploy resolves the tag again (a local-only image: the pull
        # fails, the node's copy of the tag is used, with a warning)
        redeployed = await api.ok("POST", f"/v1/deployments/{name}/redeploy")
        assert redeployed["redeploy"]["changed"] is True, redeployed
        await until(lambda: rolled_out(api, name, 3), 30, "revision 3 deployed", daemon)
        [cid] = containers_of(name)
        assert docker_json("inspect", cid)[0]["Image"] == v2_id

        history = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"]
        assert [h["image_id"] for h in history] == [v2_id, v1_id, v1_id]
        assert [h["how"] for h in history] == ["redeploy", "settings", "create"]
        reverted = await api.ok("POST", f"/v1/deployments/{name}/history/{v1_id}/revert")
        assert reverted["revision"] == 4
        await until(lambda: rolled_out(api, name, 4), 30, "revision 4 deployed", daemon)
        [cid] = containers_of(name)
        assert docker_json("inspect", cid)[0]["Image"] == v1_id
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": daemon.host(name)}
            ) as resp:
                assert "hello from v1" in await resp.text()
        status, err = await api.call(
            "POST", f"/v1/deployments/{name}/history/sha256:{'0' * 64}/revert"
        )
        assert status == 404, err
    finally:
        subprocess.run(["docker", "rmi", f"{repo}:{tag}"], capture_output=True)


async def test_kill9_during_rollout_converges_without_duplicates(
    daemon: Daemon, api: Api, new_name
):
    name = new_name("k9roll")
    await api.ok("POST", "/v1/deployments", body(name))
    await until(lambda: rolled_out(api, name, 1), 30, "revision 1 deployed", daemon)
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
    await until(
        lambda: asyncio.sleep(0, result="2" in revisions_running(name)),
        30,
        "the rollout started",
        daemon,
    )
    daemon.kill9()
    mid = revisions_running(name)
    assert "1" in mid and "2" in mid, mid
    daemon.start()
    await until(lambda: rolled_out(api, name, 2), 60, "revision 2 deployed", daemon)
    await asyncio.sleep(1.5)
    assert revisions_running(name) == ["2", "2", "2"]
    shown = await api.ok("GET", f"/v1/deployments/{name}")
    assert sorted(i["slot"] for i in shown["instances"]) == [0, 1, 2]
