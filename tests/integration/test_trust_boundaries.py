"""Trust boundaries: what an API user may loosen, and who may push to the node registry."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import Iterator
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
    patrctl,
    registry_addr,
    running_daemon,
)
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


@pytest.fixture
def daemon(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[Daemon]:
    registry = {
        "enabled": True,
        "listen": f"127.0.0.1:{free_port()}",
        "webhook_listen": f"127.0.0.1:{free_port()}",
    }
    security = {"allowed_capabilities": ["NET_RAW"], "pids_min": 32, "pids_max": 4096}
    with running_daemon(tmp_path, {"registry": registry, "security": security}) as d:
        yield d


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}, **extra}


async def test_api_cannot_grant_host_capabilities(daemon: Daemon, new_name: Any) -> None:
    name = new_name("caps")
    async with Api(daemon) as api:
        # the body: refused whole, the first forbidden one named
        body = spec(
            name,
            security={
                "extra_capabilities": ["NET_RAW", "SYS_ADMIN", "DAC_READ_SEARCH", "SYS_MODULE"],
                "pids_limit": 0,
            },
        )
        status, err = await api.call("POST", "/v1/deployments", body)
        assert status == 422, err
        assert err["field"] == "security.extra_capabilities[1]", err
        assert "SYS_ADMIN" in err["message"] and "never" in err["message"]
        status, err = await api.call(
            "POST", "/v1/deployments?dry_run=true", spec(name, security={"pids_limit": 0})
        )
        assert status == 422 and err["field"] == "security.pids_limit", err
        status, err = await api.call(
            "POST", "/v1/deployments", spec(name, security={"extra_capabilities": ["SETFCAP"]})
        )
        assert status == 422 and err["field"] == "security.extra_capabilities[0]", err
        assert "security.allowed_capabilities" in err["message"]
        status, _ = await api.call("GET", f"/v1/deployments/{name}")
        assert status == 404, "nothing was stored"

        # allowed ones are accepted; a PATCH cannot add a forbidden one either
        await api.ok(
            "POST",
            "/v1/deployments",
            spec(name, security={"extra_capabilities": ["NET_RAW"], "pids_limit": 100}),
        )
        await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
        status, err = await api.call(
            "PATCH",
            f"/v1/deployments/{name}",
            {"security": {"extra_capabilities": ["NET_RAW", "SYS_PTRACE"]}},
        )
        assert status == 422 and err["field"] == "security.extra_capabilities[1]", err
        status, err = await api.call(
            "PATCH", f"/v1/deployments/{name}", {"security": {"pids_limit": 100000}}
        )
        assert status == 422 and err["field"] == "security.pids_limit", err
        shown = await api.ok("GET", f"/v1/deployments/{name}")
        assert shown["revision"] == 1
        assert shown["spec"]["security"] == {"extra_capabilities": ["NET_RAW"], "pids_limit": 100}


async def test_registry_push_needs_the_generated_credential(daemon: Daemon, new_name: Any) -> None:
    d = daemon
    host = registry_addr(d)
    password_file = d.data_dir / "registry-password"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert oct((d.data_dir / "registry.htpasswd").stat().st_mode & 0o777) == "0o600"
    password = password_file.read_text().strip()

    # the registry answers 401 without credentials, 200 with them
    async with aiohttp.ClientSession() as http:

        async def anonymous_status() -> int | None:
            try:
                async with http.get(f"http://{host}/v2/") as resp:
                    return resp.status
            except aiohttp.ClientConnectionError:
                return None  # not started yet

        assert await until(anonymous_status, 30, "the registry answering", d, 0.3) == 401
        basic = base64.b64encode(f"patrd:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        async with http.get(f"http://{host}/v2/", headers=headers) as resp:
            assert resp.status == 200

    name = new_name("authpush")
    repo = f"apps/{name}"
    ref = f"{host}/{repo}:main"
    anonymous = {**os.environ, "DOCKER_CONFIG": str(d.workdir / "anonymous")}
    logged_in = {**os.environ, "DOCKER_CONFIG": str(d.workdir / "logged-in")}
    subprocess.run(["docker", "tag", "patrd-test/web:v1", ref], check=True)
    try:
        out = subprocess.run(["docker", "push", ref], capture_output=True, text=True, env=anonymous)
        assert out.returncode != 0
        assert "no basic auth credentials" in out.stderr or "401" in out.stderr, out.stderr

        info = patrctl(d, "registry", "login-info")
        assert info.returncode == 0, info.stderr
        line = info.stdout.strip()
        assert line == (f"docker login {host} --username patrd --password-stdin < {password_file}")
        assert password not in info.stdout
        login = subprocess.run(line, shell=True, capture_output=True, text=True, env=logged_in)
        assert login.returncode == 0, login.stderr

        def push_logged_in() -> None:
            out = subprocess.run(
                ["docker", "push", ref], capture_output=True, text=True, env=logged_in
            )
            assert out.returncode == 0, out.stderr
            subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)

        push_logged_in()  # v1; gone from the local image store again
        async with Api(d) as api:
            body = {"name": name, "registry": "local", "image": repo, "tag": "main"}
            await api.ok("POST", "/v1/deployments", {**body, "ports": {"80": "http"}})
            # patrd pulls from its own registry with the generated credential
            await until(lambda: rolled_out(api, name, 1), 90, "v1 pulled and deployed", d)
            events = (await api.ok("GET", f"/v1/deployments/{name}/events?limit=100"))["events"]
            assert any(e["kind"] == "pulled" for e in events), events
            # a push with the credential deploys
            subprocess.run(["docker", "tag", "patrd-test/web:v2", ref], check=True)
            push_logged_in()
            await until(lambda: rolled_out(api, name, 2), 90, "v2 rolled out by the push", d)
        assert password not in d.log_tail(100_000)
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True)


async def test_a_held_capability_keeps_running_warns_and_must_go_on_the_next_change(
    tmp_path: Path, test_images: dict[str, str], names: list[str], new_name: Any
) -> None:
    d = Daemon(tmp_path)
    d.config = {"security": {"allowed_capabilities": ["NET_RAW", "SYS_CHROOT"]}}
    name = new_name("held")
    d.start()
    try:
        async with Api(d) as api:
            await api.ok(
                "POST",
                "/v1/deployments",
                spec(name, security={"extra_capabilities": ["NET_RAW", "SYS_CHROOT"]}),
            )
            await until(lambda: rolled_out(api, name, 1), 60, "deployed", d)
        before = containers_of(name)
        d.stop()
        # the operator narrows the policy: NET_RAW is no longer granted
        d.config = {"security": {"allowed_capabilities": ["SYS_CHROOT"]}}
        d.start()
        async with Api(d) as api:

            async def warned() -> list[dict[str, Any]] | None:
                events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
                found = [e for e in events if e["kind"] == "security_warning"]
                return found or None

            [event] = await until(warned, 30, "security warning event", d)
            assert "NET_RAW" in event["message"] and "next change" in event["message"]
            assert containers_of(name) == before, "it keeps running, untouched"
            shown = await api.ok("GET", f"/v1/deployments/{name}")
            assert shown["status"] == "running"
            # any change must drop it, with the field and the reason named
            status, err = await api.call("PATCH", f"/v1/deployments/{name}", {"env": {"A": "1"}})
            assert status == 422, err
            assert err["field"] == "security.extra_capabilities[0]", err
            assert "drop it in this change" in err["message"], err
            await api.ok(
                "PATCH",
                f"/v1/deployments/{name}",
                {"env": {"A": "1"}, "security": {"extra_capabilities": ["SYS_CHROOT"]}},
            )
            await until(lambda: rolled_out(api, name, 2), 60, "rolled without NET_RAW", d)
        for cid in containers_of(name):
            caps = docker_json("inspect", cid)[0]["HostConfig"]["CapAdd"]
            assert "NET_RAW" not in caps and "CAP_NET_RAW" not in caps and caps, caps
        # a restart does not warn again about a revision that holds nothing
        d.stop()
        d.start()
        async with Api(d) as api:
            await asyncio.sleep(2)
            events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
            assert len([e for e in events if e["kind"] == "security_warning"]) == 1
    finally:
        d.stop()
