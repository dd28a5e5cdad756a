"""A deployment's life end to end (create, serve, stop, start, update, delete, restart
after a crash): a real daemon, the real Docker engine, the real proxy."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json, networks_of
from tests.support.waits import until

pytestmark = pytest.mark.docker

IMAGE = {"image": "patrd-test/web", "tag": "v1"}


async def get_via_proxy(daemon: Daemon, name: str, path: str = "/", port: int = 80):
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"http://127.0.0.1:{daemon.proxy_port}{path}",
            headers={"Host": daemon.host(name, port)},
        ) as r,
    ):
        return r.status, await r.text(), dict(r.headers)


async def wait_proxied(daemon: Daemon, name: str, expect: str, timeout: float = 30) -> float:
    start = time.monotonic()

    async def served() -> bool:
        status, body, _ = await get_via_proxy(daemon, name)
        return status == 200 and expect in body

    await until(served, timeout, f"a 200 with {expect!r} from {name}", daemon, interval=0.02)
    return time.monotonic() - start


async def test_create_run_proxy_stop_start_delete(daemon: Daemon, api: Api, new_name):
    name = new_name("web")
    created = await api.ok(
        "POST", "/v1/deployments", {"name": name, **IMAGE, "ports": {"80": "http"}}
    )
    assert created["status"] == "deploying"
    assert created["revision"] == 1
    await wait_proxied(daemon, name, "hello from v1")
    shown = await api.wait_status(name, "running")
    [instance] = shown["instances"]
    assert instance["state"] == "running" and instance["ready"] is True
    assert instance["address"] and instance["revision"] == 1

    listed = await api.ok("GET", "/v1/deployments")
    assert name in [d["name"] for d in listed["deployments"]]

    # labels on everything patrd creates
    [cid] = containers_of(name)
    labels = docker_json("inspect", cid)[0]["Config"]["Labels"]
    assert labels["patrd.deployment"] == name
    assert labels["patrd.revision"] == "1" and labels["patrd.instance"] == "0"
    assert docker_json("inspect", cid)[0]["HostConfig"]["Init"] is True
    [net] = docker_json("network", "inspect", f"patrd-{name}")
    subnet = net["IPAM"]["Config"][0]["Subnet"]
    assert subnet.startswith("10.213.") and subnet.endswith("/24"), subnet

    await api.ok("POST", f"/v1/deployments/{name}/stop")
    await api.wait_status(name, "stopped")
    await until(lambda: containers_of(name) == [], 10, "no container left", daemon)
    status, body, _ = await get_via_proxy(daemon, name)
    assert status == 503 and "stopped" in body

    await api.ok("POST", f"/v1/deployments/{name}/start")
    await wait_proxied(daemon, name, "hello from v1")
    await api.wait_status(name, "running")

    status, err = await api.call("DELETE", f"/v1/deployments/{name}")
    assert status == 400 and err["field"] == "confirm"
    status, err = await api.call("DELETE", f"/v1/deployments/{name}?confirm=wrong")
    assert status == 400
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name)
    assert containers_of(name) == []
    assert networks_of(name) == []
    status, _, _ = await get_via_proxy(daemon, name)
    assert status == 404


async def test_unknown_host_is_404(daemon: Daemon):
    status, _, _ = await get_via_proxy(daemon, "no-such-deployment")
    assert status == 404


async def test_killed_container_is_restarted(daemon: Daemon, api: Api, new_name):
    name = new_name("crash")
    await api.ok("POST", "/v1/deployments", {"name": name, **IMAGE, "ports": {"80": "http"}})
    await wait_proxied(daemon, name, "hello from v1")
    [cid] = containers_of(name)
    subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
    # patrd starts the same container again (backoff starts at 1 s)

    def started_again() -> bool:
        state = docker_json("inspect", cid)[0]["State"]
        return bool(state["Running"] and state["StartedAt"] and state["ExitCode"] == 0)

    await until(started_again, 30, "the killed container running again", daemon)
    await wait_proxied(daemon, name, "hello from v1")
    shown = await api.wait_status(name, "running")
    assert shown["instances"][0]["restarts"] >= 1
    events = await api.ok("GET", f"/v1/deployments/{name}/events")
    assert any(e["kind"] == "restart" for e in events["events"]), events


async def test_kill9_and_restart_adopts_replicas(daemon: Daemon, api: Api, new_name):
    name = new_name("adopt")
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, **IMAGE, "ports": {"80": "http"}, "scale": {"min": 3, "max": 3}},
    )
    await api.wait_status(name, "running")
    before = containers_of(name)
    assert len(before) == 3
    started_at = {c: docker_json("inspect", c)[0]["State"]["StartedAt"] for c in before}

    daemon.kill9()
    daemon.start()
    await api.wait_status(name, "running")
    await wait_proxied(daemon, name, "hello from v1")
    await asyncio.sleep(2)  # a few reconcile passes
    after = containers_of(name)
    assert after == before, "no container added or removed"
    for c in after:
        assert docker_json("inspect", c)[0]["State"]["StartedAt"] == started_at[c], "not restarted"

    # a clean SIGTERM restart also keeps all three
    assert daemon.stop() == 0
    assert containers_of(name, all_states=False) == before, "SIGTERM leaves containers running"
    daemon.start()
    await api.wait_status(name, "running")
    assert containers_of(name) == before


async def test_update_rolls_to_new_revision_with_env(daemon: Daemon, api: Api, new_name):
    name = new_name("upd")
    await api.ok("POST", "/v1/deployments", {"name": name, **IMAGE, "ports": {"80": "http"}})
    await api.wait_status(name, "running")
    [old] = containers_of(name)
    updated = await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"GREETING": "hi"}})
    assert updated["revision"] == 2
    status, err = await api.call("PATCH", f"/v1/deployments/{name}", {"tag": "v2"})
    assert status == 422 and err["field"] == "tag" and "new deployment" in err["message"]

    def replaced() -> bool:
        ids = containers_of(name)
        return len(ids) == 1 and ids != [old]

    await until(replaced, 30, "the container replaced", daemon)
    [new] = containers_of(name)
    assert new != old
    env = dict(e.split("=", 1) for e in docker_json("inspect", new)[0]["Config"]["Env"])
    assert env["GREETING"] == "hi"
    assert env["PATR"] == "true"
    assert env["DEPLOYMENT_NAME"] == name
    assert env["PATRD_REVISION"] == "2" and env["PATRD_INSTANCE"] == "0"
    await api.wait_status(name, "running")
    await wait_proxied(daemon, name, "hello from v1")


async def test_missing_image_errors_then_recovers(daemon: Daemon, api: Api, new_name):
    name = new_name("img")
    tag = f"missing-{name}"
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, "image": "patrd-test/web", "tag": tag, "ports": {"80": "http"}},
    )
    shown = await api.wait_status(name, "errored")
    assert tag in shown["status_reason"]
    subprocess.run(["docker", "tag", "patrd-test/web:v1", f"patrd-test/web:{tag}"], check=True)
    try:
        await api.wait_status(name, "running", timeout=60)
        await wait_proxied(daemon, name, "hello from v1")
    finally:
        subprocess.run(["docker", "rmi", f"patrd-test/web:{tag}"], capture_output=True)


async def test_websocket_echo_through_proxy(daemon: Daemon, api: Api, new_name):
    name = new_name("ws")
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, **IMAGE, "ports": {"80": "http", "8081": "http"}},
    )
    await api.wait_status(name, "running")
    async with aiohttp.ClientSession() as s:

        async def upgraded() -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await s.ws_connect(
                    f"http://127.0.0.1:{daemon.proxy_port}/",
                    headers={"Host": daemon.host(name, 8081)},
                )
            except aiohttp.WSServerHandshakeError:
                return None

        ws = await until(upgraded, 20, "the websocket upgraded", daemon)
        async with ws:
            for word in ("ping", "pong", "x" * 5000):
                await ws.send_str(word)
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.data == word


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "image": "a", "ports": {"80": "http"}}, "name"),
        ({"name": "ok-name", "image": "a:b", "ports": {"80": "http"}}, "image"),
        ({"name": "ok-name", "image": "a", "ports": {}}, "ports"),
        ({"name": "ok-name", "image": "a", "ports": {"99999": "http"}}, "ports.99999"),
        (
            {"name": "ok-name", "image": "a", "ports": {"80": "http"}, "scale": {"min": 0}},
            "scale.min",
        ),
        ({"name": "ok-name", "image": "a", "ports": {"80": "http"}, "env": {"1X": "y"}}, "env.1X"),
        ({"name": "ok-name", "image": "a", "ports": {"80": "http"}, "region": "mars"}, "region"),
    ],
)
async def test_bad_requests_name_the_field(api: Api, body, field):
    status, err = await api.call("POST", "/v1/deployments", body)
    assert status == 422, err
    assert err["field"] == field


async def test_malformed_json_is_400(daemon: Daemon):
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s:
        async with s.post("http://patrd/v1/deployments", data=b"{not json") as r:
            assert r.status == 400
            assert (await r.json())["error"] == "bad_request"
