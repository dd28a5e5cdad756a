"""Deploy on push: the node registry (Debian docker-registry) notifies patrd; pushes roll out."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import (
    Api,
    Daemon,
    containers_of,
    docker_json,
    free_port,
    registry_addr,
    running_daemon,
)
from tests.support.load import Load
from tests.support.registry import plain_registry, push_when_up, retry_while_starting
from tests.support.specs import node_registry_spec
from tests.support.waits import rolled_out, until, until_sync

pytestmark = pytest.mark.docker

HEALTH = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5, "failure_threshold": 20}


def docker_login(d: Daemon) -> dict[str, str]:
    """The env of a Docker CLI logged in to the node registry with patrd's generated
    credential (its own DOCKER_CONFIG: the user's ~/.docker is not touched)."""
    env = {**os.environ, "DOCKER_CONFIG": str(d.workdir / "docker-cli")}
    password = d.data_dir / "registry-password"
    until_sync(password.exists, 30, "the registry credential generated", d)
    retry_while_starting(
        ["docker", "login", registry_addr(d), "-u", "patrd", "--password-stdin"],
        env=env,
        stdin=password.read_text(),
    )
    return env


def push(d: Daemon, source: str, repo: str, tag: str) -> str:
    """Tag a local image into the node registry and push it; the pushed manifest digest."""
    ref = f"{registry_addr(d)}/{repo}:{tag}"
    subprocess.run(["docker", "tag", source, ref], check=True, capture_output=True)
    push_when_up(ref, env=docker_login(d))
    digests = docker_json("image", "inspect", ref)[0]["RepoDigests"]
    # Every registry the image was ever pushed to is listed: a port an earlier
    # test's registry had may name another repository, so match the repository.
    mine = f"{registry_addr(d)}/{repo}@"
    return str(next(x.split("@", 1)[1] for x in digests if x.startswith(mine)))


async def webhook(d: Daemon, body: bytes, secret: str | None) -> tuple[int, Any]:
    listen = d.config["registry"]["webhook_listen"]
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://{listen}/v1/registry/events", data=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()


async def test_push_rolls_out_and_history_reverts(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name, quiet = new_name("push"), new_name("quiet")
    repo = f"apps/{name}"
    v1 = push(d, "patrd-test/web:v1", repo, "stable")
    base = {"registry": "local", "image": repo, "tag": "stable", "ports": {"80": "http"}}
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, **base, "scale": {"min": 2, "max": 2}, "startup_probe": HEALTH},
    )
    await api.ok("POST", "/v1/deployments", {"name": quiet, **base, "deploy_on_push": False})
    await until(lambda: rolled_out(api, name, 1), 60, "v1 deployed", d)
    await until(lambda: rolled_out(api, quiet, 1), 60, "quiet deployed", d)
    quiet_before = containers_of(quiet)

    async with Load(d.proxy_port, d.host(name), "/", concurrency=4) as load:
        await asyncio.sleep(0.5)
        v2 = push(d, "patrd-test/web:v2", repo, "stable")
        await until(lambda: rolled_out(api, name, 2), 60, "v2 rolled out on push", d)
        await asyncio.sleep(0.5)
    assert load.result.errors == [] and load.result.failures == 0, load.result.bad
    assert load.result.total > 50
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"http://127.0.0.1:{d.proxy_port}/", headers={"Host": d.host(name)}
        ) as resp:
            assert "hello from v2" in await resp.text()
    assert containers_of(quiet) == quiet_before, "deploy_on_push: false is respected"

    # the registry's own notification had arrived; a duplicate rolls nothing
    secret = (d.data_dir / "registry-webhook.secret").read_text().strip()
    event = {
        "events": [
            {
                "action": "push",
                "timestamp": "2020-01-01T00:00:00.123456789Z",
                "target": {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "repository": repo,
                    "tag": "stable",
                    "digest": v2,
                },
            }
        ]
    }
    status, answer = await webhook(d, json.dumps(event).encode(), secret)
    assert status == 202 and answer == {"pushes": 1, "rollouts": []}, answer
    old = json.loads(json.dumps(event))
    old["events"][0]["target"]["digest"] = v1  # an out-of-order, older push
    status, answer = await webhook(d, json.dumps(old).encode(), secret)
    assert status == 202 and answer["rollouts"] == [], answer
    assert (await api.ok("GET", f"/v1/deployments/{name}"))["revision"] == 2

    # security: bad secret, no secret, malformed body
    assert (await webhook(d, json.dumps(event).encode(), "wrong"))[0] == 401
    assert (await webhook(d, json.dumps(event).encode(), None))[0] == 401
    assert (await webhook(d, b"{not json", secret))[0] == 400
    unknown = json.loads(json.dumps(event))
    unknown["events"][0]["target"]["repository"] = "nobody/here"
    assert (await webhook(d, json.dumps(unknown).encode(), secret))[1]["rollouts"] == []

    # history has both digests; a revert to v1 is exact
    history = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"]
    assert [h["state"] for h in history] == ["deployed", "superseded"]
    ids = [h["image_id"] for h in history]
    assert [h["digest"] for h in history] == [v2, v1]
    assert [h["how"] for h in history] == ["push", "create"]
    v1_id = docker_json("image", "inspect", "patrd-test/web:v1")[0]["Id"]
    v2_id = docker_json("image", "inspect", "patrd-test/web:v2")[0]["Id"]
    assert ids == [v2_id, v1_id]
    await api.ok("POST", f"/v1/deployments/{name}/history/{v1_id}/revert")
    await until(lambda: rolled_out(api, name, 3), 60, "reverted to v1", d)
    for cid in containers_of(name):
        assert docker_json("inspect", cid)[0]["Image"] == v1_id


async def test_first_push_starts_a_deployment_created_without_deploying(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name = new_name("later")
    repo = f"apps/{name}"
    await api.ok(
        "POST",
        "/v1/deployments",
        node_registry_spec(name, repo, "main", deploy_on_create=False),
    )
    assert (await api.ok("GET", f"/v1/deployments/{name}"))["status"] == "created"
    push(d, "patrd-test/web:v1", repo, "main")
    await until(lambda: rolled_out(api, name, 2), 60, "started by the first push", d)


async def test_private_registry_pulls_with_credentials_from_a_secret(
    tmp_path: Path, test_images: dict[str, str], names: list[str], new_name
) -> None:
    password = f"pw-{time.time_ns()}"
    htpasswd = tmp_path / "htpasswd"
    out = subprocess.run(
        ["htpasswd", "-Bbn", "pusher", password], capture_output=True, text=True, check=True
    )
    htpasswd.write_text(out.stdout)
    d = Daemon(tmp_path / "d")
    d.workdir.mkdir()
    d.config = {
        "registry": {
            "enabled": True,
            "listen": f"127.0.0.1:{free_port()}",
            "webhook_listen": f"127.0.0.1:{free_port()}",
            "htpasswd_file": str(htpasswd),
        }
    }
    d.start()
    host = registry_addr(d)
    name = new_name("priv")
    ref = f"{host}/private/{name}:1"
    try:
        retry_while_starting(
            ["docker", "login", host, "-u", "pusher", "--password-stdin"], stdin=password
        )
        subprocess.run(["docker", "tag", "patrd-test/web:v1", ref], check=True)
        subprocess.run(["docker", "push", ref], check=True, capture_output=True)
        subprocess.run(["docker", "logout", host], check=True, capture_output=True)
        subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)
        async with Api(d) as api:
            await api.ok(
                "POST", "/v1/secrets", {"name": f"{name}-reg", "value": f"pusher:{password}"}
            )
            spec = {
                "name": name,
                "registry": host,
                "image": f"private/{name}",
                "tag": "1",
                "ports": {"80": "http"},
                "deploy_on_push": False,
            }
            await api.ok("POST", "/v1/deployments", spec)
            errored = await api.wait_status(name, "errored", timeout=30)
            assert "unavailable" in errored["status_reason"], errored
            await api.ok(
                "PATCH", f"/v1/deployments/{name}", {"registry_auth": {"secret": f"{name}-reg"}}
            )
            await api.wait_status(name, "running", timeout=60)
            shown = await api.ok("GET", f"/v1/deployments/{name}")
            assert shown["spec"]["registry_auth"] == {"secret": f"{name}-reg"}
            assert password not in repr(shown)
        assert password not in d.log_tail(100_000)
    finally:
        d.stop()
        subprocess.run(["docker", "rmi", ref], capture_output=True)


async def test_polling_another_registry_rolls_a_new_digest(
    tmp_path: Path, test_images: dict[str, str], names: list[str], new_name
) -> None:
    """A registry patrd does not run (no notifications): the poller finds the new digest."""
    (tmp_path / "d").mkdir()
    name = new_name("poll")
    with (
        plain_registry(tmp_path) as registry,
        running_daemon(tmp_path / "d", {"registry": {"poll_interval_s": 0.5}}) as d,
    ):
        ref = f"{registry}/poll/{name}:1"
        try:

            def push_as(source: str) -> None:
                subprocess.run(["docker", "tag", source, ref], check=True)
                push_when_up(ref)

            push_as("patrd-test/web:v1")
            async with Api(d) as api:
                await api.ok(
                    "POST",
                    "/v1/deployments",
                    {
                        "name": name,
                        "registry": registry,
                        "image": f"poll/{name}",
                        "tag": "1",
                        "ports": {"80": "http"},
                    },
                )
                await until(lambda: rolled_out(api, name, 1), 60, "v1 deployed", d)
                await asyncio.sleep(2)  # several polls: the same digest rolls nothing
                assert (await api.ok("GET", f"/v1/deployments/{name}"))["revision"] == 1
                push_as("patrd-test/web:v2")
                await until(lambda: rolled_out(api, name, 2), 60, "v2 found by polling", d)
                v2_id = docker_json("image", "inspect", "patrd-test/web:v2")[0]["Id"]
                for cid in containers_of(name):
                    assert docker_json("inspect", cid)[0]["Image"] == v2_id
        finally:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
