"""Secrets, config mounts, volumes and the special env vars, on the real engine."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
import uuid

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json, volumes_of
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def container_env(cid: str) -> dict[str, str]:
    return dict(e.split("=", 1) for e in docker_json("inspect", cid)[0]["Config"]["Env"])


def docker_exec(cid: str, *cmd: str) -> str:
    return subprocess.run(
        ["docker", "exec", cid, *cmd], capture_output=True, text=True, check=True
    ).stdout


async def test_secret_injected_rotated_and_never_leaked(daemon: Daemon, api: Api, new_name):
    name = new_name("sec")
    value = f"s3cr3t-{uuid.uuid4().hex}"
    rotated = f"r0tated-{uuid.uuid4().hex}"
    created = await api.ok("POST", "/v1/secrets", {"name": f"{name}-db", "value": value})
    assert set(created) == {"name", "version", "created_at", "updated_at", "used_by"}
    status, err = await api.call(
        "POST", "/v1/deployments", web_spec(name, env={"DB": {"secret": "nope"}})
    )
    assert status == 422 and err["field"] == "env.DB.secret", err
    await api.ok(
        "POST", "/v1/deployments", web_spec(name, env={"DB": {"secret": f"{name}-db"}, "X": "1"})
    )
    await until(lambda: rolled_out(api, name, 1), 30, "deployed", daemon)
    [cid] = containers_of(name)
    assert container_env(cid)["DB"] == value
    listed = await api.ok("GET", "/v1/secrets")
    assert [s["used_by"] for s in listed["secrets"] if s["name"] == f"{name}-db"] == [[name]]

    status, err = await api.call("DELETE", f"/v1/secrets/{name}-db")
    assert status == 409 and name in err["message"]

    # rotation rolls the deployment to the new value
    await api.ok("PUT", f"/v1/secrets/{name}-db", {"value": rotated})

    def values_now() -> list[str] | None:
        try:
            return [container_env(c)["DB"] for c in containers_of(name)]
        except subprocess.CalledProcessError:
            return None  # a container went away between listing and inspecting it

    await until(
        lambda: values_now() == [rotated],
        30,
        "rolled to the rotated value",
        daemon,
    )
    await api.wait_status(name, "running")

    # nowhere at rest, in logs or in answers
    answers = [
        await api.ok("GET", "/v1/secrets"),
        await api.ok("GET", f"/v1/secrets/{name}-db"),
        await api.ok("GET", f"/v1/deployments/{name}"),
        await api.ok("GET", f"/v1/deployments/{name}/events"),
        await api.ok("GET", "/v1/deployments"),
    ]
    for secret in (value, rotated):
        assert secret not in repr(answers)
        assert secret not in daemon.log_tail(100_000)
        for path in daemon.data_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        labels = docker_json("inspect", *containers_of(name))[0]["Config"]["Labels"]
        assert secret not in repr(labels)


async def test_wrong_or_missing_key_is_a_startup_error(daemon: Daemon, api: Api, new_name):
    await api.ok("POST", "/v1/secrets", {"name": f"{new_name('k')}-x", "value": "v"})
    daemon.stop()
    key = daemon.data_dir / "secrets.key"
    original = key.read_bytes()
    key.write_bytes(b"\x01" * 32)
    with pytest.raises(RuntimeError, match="secrets key does not match"):
        daemon.start()
    key.unlink()
    with pytest.raises(RuntimeError, match=r"secrets key file \S+ is missing"):
        daemon.start()
    key.write_bytes(original)
    key.chmod(0o600)
    daemon.start()
    assert (await api.ok("GET", "/v1/health"))["status"] == "ok"


async def test_special_env_and_config_live_edit(daemon: Daemon, api: Api, new_name):
    name = new_name("cfg")
    await api.ok(
        "POST", "/v1/deployments", web_spec(name, config_mounts={"app.conf": b64("mode=one\n")})
    )
    await until(lambda: rolled_out(api, name, 1), 30, "deployed", daemon)
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    [cid] = containers_of(name)
    env = container_env(cid)
    expected_hash = hashlib.sha512(b"app.conf\x00mode=one\n\x00").hexdigest()
    assert env["PATR"] == "true"
    assert env["DEPLOYMENT_ID"] == dep["id"] and env["DEPLOYMENT_NAME"] == name
    assert env["CONFIG_MAP_HASH"] == expected_hash
    assert env["PATRD_INSTANCE"] == "0" and env["PATRD_REVISION"] == "1"
    assert docker_exec(cid, "cat", "/etc/config/app.conf") == "mode=one\n"
    # a live edit through the raw file route: no restart, seen within seconds
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(daemon.socket))
    ) as http:
        async with http.put(
            f"http://patrd/v1/deployments/{name}/config/app.conf", data=b"mode=two\n"
        ) as resp:
            assert resp.status == 200, await resp.text()
    started = time.monotonic()
    await until(
        lambda: docker_exec(cid, "cat", "/etc/config/app.conf") == "mode=two\n",
        10,
        "the edit visible inside the container",
        daemon,
    )
    seen_after = time.monotonic() - started
    assert containers_of(name) == [cid], "no restart"
    assert container_env(cid)["CONFIG_MAP_HASH"] == expected_hash, "changes on the next rollout"
    assert "Read-only" in docker_exec(cid, "sh", "-c", "touch /etc/config/x 2>&1; true")
    print(f"config edit visible in the container after {seen_after:.2f}s")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"config_mounts": {"../x": b64("a")}}, "config_mounts.../x"),
        ({"config_mounts": {"..": b64("a")}}, "config_mounts..."),
        ({"config_mounts": {"a b": b64("a")}}, "config_mounts.a b"),
        ({"config_mounts": {"ok": "%%%"}}, "config_mounts.ok"),
        ({"volumes": {"data": {"path": "/etc/config", "size_gb": 1}}}, "volumes.data.path"),
        ({"volumes": {"data": {"path": "relative", "size_gb": 1}}}, "volumes.data.path"),
        ({"volumes": {"data": {"path": "/data", "size_gb": 0}}}, "volumes.data.size_gb"),
        (
            {"volumes": {"data": {"path": "/data", "size_gb": 1}}, "scale": {"min": 1, "max": 3}},
            "scale.max",
        ),
        ({"env": {"PATR": "false"}}, "env.PATR"),
        ({"env": {"CONFIG_MAP_HASH": "x"}}, "env.CONFIG_MAP_HASH"),
    ],
)
async def test_refused_names_and_paths(api: Api, new_name, extra, field):
    status, err = await api.call("POST", "/v1/deployments", web_spec(new_name("bad"), **extra))
    assert status == 422, err
    assert err["field"] == field


async def test_volumes_survive_restart_and_rollout_and_scale_down_needs_confirmation(
    daemon: Daemon, api: Api, new_name
):
    name = new_name("vol")
    vols = {"data": {"path": "/data", "size_gb": 1}}
    await api.ok(
        "POST", "/v1/deployments", web_spec(name, volumes=vols, scale={"min": 2, "max": 2})
    )
    await until(lambda: rolled_out(api, name, 1), 30, "deployed", daemon)
    assert volumes_of(name) == [f"patrd.{name}.data.0", f"patrd.{name}.data.1"]
    by_slot = {
        i["slot"]: i["container_id"]
        for i in (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
    }
    docker_exec(by_slot[0], "sh", "-c", "echo zero > /data/hello")
    docker_exec(by_slot[1], "sh", "-c", "echo one > /data/hello")

    # a crash and a restart keep the data
    subprocess.run(["docker", "kill", by_slot[0]], check=True, capture_output=True)
    await until(
        lambda: docker_json("inspect", by_slot[0])[0]["State"]["Running"], 30, "restarted", daemon
    )
    assert docker_exec(by_slot[0], "cat", "/data/hello") == "zero\n"

    # a rollout (stop-first per instance) keeps each instance's data
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
    await until(lambda: rolled_out(api, name, 2), 60, "rolled out", daemon)
    after = {
        i["slot"]: i["container_id"]
        for i in (await api.ok("GET", f"/v1/deployments/{name}"))["instances"]
    }
    assert set(after.values()).isdisjoint(by_slot.values())
    assert docker_exec(after[0], "cat", "/data/hello") == "zero\n"
    assert docker_exec(after[1], "cat", "/data/hello") == "one\n"
    listed = (await api.ok("GET", f"/v1/deployments/{name}/volumes"))["volumes"]
    assert [(v["instance"], v["used_bytes"]) for v in listed] == [(0, 5), (1, 4)]

    # volumes cannot be added; size only grows
    status, err = await api.call(
        "PATCH",
        f"/v1/deployments/{name}",
        {"volumes": {**vols, "more": {"path": "/more", "size_gb": 1}}},
    )
    assert status == 422 and err["field"] == "volumes.more", err
    status, err = await api.call(
        "PATCH", f"/v1/deployments/{name}", {"volumes": {"data": {"path": "/data", "size_gb": 2}}}
    )
    assert status == 200, err

    # scaling down deletes data: refused without the explicit flag
    status, err = await api.call(
        "PATCH", f"/v1/deployments/{name}", {"scale": {"min": 1, "max": 1}}
    )
    assert status == 409 and f"patrd.{name}.data.1" in err["message"], err
    await api.ok(
        "PATCH",
        f"/v1/deployments/{name}?confirm_volume_loss=true",
        {"scale": {"min": 1, "max": 1}},
    )
    await until(
        lambda: volumes_of(name) == [f"patrd.{name}.data.0"], 30, "excess volume gone", daemon
    )
    [kept] = containers_of(name)
    assert docker_exec(kept, "cat", "/data/hello") == "zero\n"

    # delete keeps the volumes unless asked, and says which
    gone = await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    assert gone["kept_volumes"] == [f"patrd.{name}.data.0"]
    await api.wait_gone(name)
    assert volumes_of(name) == [f"patrd.{name}.data.0"]


async def test_delete_with_volumes_removes_them(daemon: Daemon, api: Api, new_name):
    name = new_name("vdel")
    await api.ok(
        "POST",
        "/v1/deployments",
        web_spec(name, volumes={"data": {"path": "/data", "size_gb": 1}}),
    )
    await until(lambda: rolled_out(api, name, 1), 30, "deployed", daemon)
    assert volumes_of(name) == [f"patrd.{name}.data.0"]
    gone = await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}&delete_volumes=true")
    assert gone["kept_volumes"] == []
    await api.wait_gone(name)
    await until(lambda: volumes_of(name) == [], 10, "volumes removed", daemon)
    assert not (daemon.data_dir / "config" / gone["id"]).exists()


async def test_security_field_is_the_explicit_override(daemon: Daemon, api: Api, new_name):
    plain, loose = new_name("hard"), new_name("loose")
    await api.ok("POST", "/v1/deployments", web_spec(plain))
    await api.ok(
        "POST",
        "/v1/deployments",
        web_spec(loose, security={"extra_capabilities": ["NET_RAW"], "pids_limit": 64}),
    )
    await until(lambda: rolled_out(api, plain, 1), 30, "deployed", daemon)
    await until(lambda: rolled_out(api, loose, 1), 30, "deployed", daemon)
    [p] = containers_of(plain)
    [lo] = containers_of(loose)
    plain_host = docker_json("inspect", p)[0]["HostConfig"]
    loose_host = docker_json("inspect", lo)[0]["HostConfig"]
    assert "NET_RAW" not in plain_host["CapAdd"] and plain_host["PidsLimit"] == 1024
    assert "NET_RAW" in loose_host["CapAdd"] and loose_host["PidsLimit"] == 64
    assert loose_host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in loose_host["SecurityOpt"]
    status, err = await api.call(
        "POST", "/v1/deployments", web_spec(new_name("x"), security={"extra_capabilities": ["GOD"]})
    )
    assert status == 422 and err["field"] == "security.extra_capabilities[0]"
