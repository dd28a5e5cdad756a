"""Docker volume names cannot collide, and volumes named the old way are adopted."""

from __future__ import annotations

import sqlite3
import subprocess
from typing import Any

import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json, volumes_of
from tests.support.specs import web_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker


def body(name: str, volume: str) -> dict[str, Any]:
    return web_spec(name, volumes={volume: {"path": "/data", "size_gb": 1}})


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def owner_of(daemon: Daemon) -> str:
    with sqlite3.connect(f"file:{daemon.data_dir / 'patrd.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'owner_id'").fetchone()
    assert row is not None
    return str(row[0])


async def test_names_that_collided_before_keep_separate_data(
    daemon: Daemon, api: Api, new_name, names: list[str]
):
    base = new_name("vc")
    # Under the old scheme both were "patrd-<base>-b-c-0": one volume, shared data.
    first, second = f"{base}-b", base
    names.append(first)
    await api.ok("POST", "/v1/deployments", body(first, "c"))
    await api.ok("POST", "/v1/deployments", body(second, "b-c"))
    await until(lambda: rolled_out(api, first, 1), 60, "first deployed", daemon)
    await until(lambda: rolled_out(api, second, 1), 60, "second deployed", daemon)
    assert volumes_of(first) == [f"patrd.{first}.c.0"]
    assert volumes_of(second) == [f"patrd.{second}.b-c.0"]
    [one], [two] = containers_of(first), containers_of(second)
    sh("docker", "exec", one, "sh", "-c", "echo first > /data/who")
    sh("docker", "exec", two, "sh", "-c", "echo second > /data/who")
    assert sh("docker", "exec", one, "cat", "/data/who") == "first\n"
    assert sh("docker", "exec", two, "cat", "/data/who") == "second\n"
    listed = (await api.ok("GET", f"/v1/deployments/{second}/volumes"))["volumes"]
    assert [(v["name"], v["volume"]) for v in listed] == [("b-c", f"patrd.{second}.b-c.0")]


async def test_volume_named_the_old_way_is_adopted_with_its_data(
    daemon: Daemon, api: Api, new_name
):
    name = new_name("vold")
    old = f"patrd-{name}-data-0"
    # Exactly what patrd created before the dotted scheme: old name, these labels.
    sh(
        "docker", "volume", "create", "--label", "patrd.managed=1",
        "--label", f"patrd.owner={owner_of(daemon)}", "--label", f"patrd.deployment={name}",
        "--label", "patrd.volume=data", "--label", "patrd.instance=0", old,
    )  # fmt: skip
    sh(
        "docker", "run", "--rm", "-v", f"{old}:/data", "patrd-test/web:v1",
        "sh", "-c", "echo kept > /data/hello",
    )  # fmt: skip
    # A volume of the new name that is not this deployment's is refused, not shared.
    await api.ok("POST", "/v1/deployments", body(name, "data"))
    await until(lambda: rolled_out(api, name, 1), 60, "deployed", daemon)
    [cid] = containers_of(name)
    mounts = [m["Name"] for m in docker_json("inspect", cid)[0]["Mounts"] if m["Type"] == "volume"]
    assert mounts == [old]
    assert sh("docker", "exec", cid, "cat", "/data/hello") == "kept\n"
    assert volumes_of(name) == [old]  # no second, empty volume
    listed = (await api.ok("GET", f"/v1/deployments/{name}/volumes"))["volumes"]
    assert [(v["name"], v["volume"], v["used_bytes"]) for v in listed] == [("data", old, 5)]
    # ...and it stays adopted across a rollout and a daemon restart.
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
    await until(lambda: rolled_out(api, name, 2), 60, "rolled out", daemon)
    daemon.stop()
    daemon.start()
    await until(lambda: rolled_out(api, name, 2), 30, "adopted after restart", daemon)
    [cid] = containers_of(name)
    assert sh("docker", "exec", cid, "cat", "/data/hello") == "kept\n"
    assert volumes_of(name) == [old]


async def test_a_foreign_volume_under_the_new_name_is_refused(daemon: Daemon, api: Api, new_name):
    name = new_name("vfor")
    taken = f"patrd.{name}.data.0"
    sh("docker", "volume", "create", "--label", f"patrd.deployment={name}", taken)
    try:
        await api.ok("POST", "/v1/deployments", body(name, "data"))

        refusal = f"volume {taken} exists but is not {name}'s data of instance 0"
        await until(lambda: refusal in daemon.log_path.read_text(), 20, "refused", daemon)
        assert containers_of(name) == []
        assert sh("docker", "volume", "inspect", "-f", "{{json .Labels}}", taken).strip() == (
            f'{{"patrd.deployment":"{name}"}}'
        )
    finally:
        await api.call("DELETE", f"/v1/deployments/{name}?confirm={name}")
        await api.wait_gone(name)
        subprocess.run(["docker", "volume", "rm", taken], capture_output=True)
