"""Pinned releases on the real engine and a real registry (Debian docker-registry).

Images reach the node registry from a second client that does not share the
node's image store: ``skopeo copy docker-daemon:… docker://…`` reads the
image out of Docker and uploads it itself, so the node's local tag does not
move when a new version is pushed (the case that used to roll back silently).
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, docker_json, registry_addr
from tests.support.releases import history, image_id, image_of, skopeo_push
from tests.support.specs import node_registry_spec
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker

HEALTH = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5, "failure_threshold": 20}


async def served(d: Daemon, name: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"http://127.0.0.1:{d.proxy_port}/", headers={"Host": d.host(name)}
        ) as resp:
            return await resp.text()


async def test_a_pushed_image_survives_settings_changes_and_a_revert_stays_reverted(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name = new_name("pin")
    repo = f"apps/{name}"
    v1, v2 = image_id("patrd-test/web:v1"), image_id("patrd-test/web:v2")
    d1 = skopeo_push(d, "patrd-test/web:v1", repo, "stable")
    await api.ok("POST", "/v1/deployments", node_registry_spec(name, repo, startup_probe=HEALTH))
    await until(lambda: rolled_out(api, name, 1), 60, "v1 deployed", d)
    assert image_of(d, name) == {v1}

    d2 = skopeo_push(d, "patrd-test/web:v2", repo, "stable")
    assert d2 != d1
    await until(lambda: rolled_out(api, name, 2), 60, "v2 rolled out on push", d)
    assert image_of(d, name) == {v2}
    local_tag = f"{registry_addr(d)}/{repo}:stable"
    assert image_id(local_tag) == v1, "the node's tag did not move: the bug's precondition"

    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "3"}})
    await until(lambda: rolled_out(api, name, 3), 60, "env change deployed", d)
    assert image_of(d, name) == {v2}, "a settings change keeps the pushed image"
    assert "hello from v2" in await served(d, name)

    reverted = await api.ok("POST", f"/v1/deployments/{name}/revert", {"ref": "1"})
    assert reverted["revision"] == 4
    await until(lambda: rolled_out(api, name, 4), 60, "revert deployed", d)
    assert image_of(d, name) == {v1}
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "5"}})
    await until(lambda: rolled_out(api, name, 5), 60, "env change after revert deployed", d)
    assert image_of(d, name) == {v1}, "a settings change keeps the reverted image"
    assert "hello from v1" in await served(d, name)

    entries = await history(api, name)
    assert [(h["revision"], h["how"], h["release"]) for h in entries] == [
        (5, "settings", False),
        (4, "revert", True),
        (3, "settings", False),
        (2, "push", True),
        (1, "create", True),
    ]
    assert [h["digest"] for h in entries] == [d1, d1, d2, d2, d1]
    assert [h["image_id"] for h in entries] == [v1, v1, v2, v2, v1]

    # REF forms: a digest, an image id prefix; too short a prefix names the minimum.
    by_digest = await api.ok("POST", f"/v1/deployments/{name}/revert", {"ref": d2})
    await until(lambda: rolled_out(api, name, by_digest["revision"]), 60, "revert by digest", d)
    assert image_of(d, name) == {v2}
    status, err = await api.call("POST", f"/v1/deployments/{name}/revert", {"ref": v1[7:12]})
    assert status == 422 and "at least 12" in err["message"], err
    status, err = await api.call("POST", f"/v1/deployments/{name}/revert", {"ref": "99"})
    assert status == 404, err


async def test_redeploy_rolls_only_a_changed_digest(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name = new_name("redep")
    repo = f"apps/{name}"
    v2 = image_id("patrd-test/web:v2")
    d1 = skopeo_push(d, "patrd-test/web:v1", repo, "main")
    await api.ok(
        "POST",
        "/v1/deployments",
        node_registry_spec(
            name,
            repo,
            "main",
            deploy_on_push=False,  # as a registry that cannot notify patrd
            startup_probe=HEALTH,
        ),
    )
    await until(lambda: rolled_out(api, name, 1), 60, "v1 deployed", d)
    before = containers_of(name)

    status, same = await api.call("POST", f"/v1/deployments/{name}/redeploy")
    assert status == 200, same
    assert same["redeploy"]["changed"] is False and same["revision"] == 1
    assert same["redeploy"]["message"] == f"already at {d1[:19]}"

    d2 = skopeo_push(d, "patrd-test/web:v2", repo, "main")
    await asyncio.sleep(1)
    assert (await api.ok("GET", f"/v1/deployments/{name}"))["revision"] == 1, "no deploy on push"
    status, changed = await api.call("POST", f"/v1/deployments/{name}/redeploy")
    assert status == 202, changed
    assert changed["redeploy"]["changed"] is True and changed["redeploy"]["digest"] == d2
    assert changed["revision"] == 2
    await until(lambda: rolled_out(api, name, 2), 60, "redeploy rolled out", d)
    assert image_of(d, name) == {v2} and not set(before) & set(containers_of(name))
    [entry, _] = await history(api, name)
    assert (entry["how"], entry["digest"], entry["state"]) == ("redeploy", d2, "deployed")
    status, again = await api.call("POST", f"/v1/deployments/{name}/redeploy")
    assert status == 200 and again["redeploy"]["changed"] is False, again


async def test_a_push_to_a_stopped_deployment_runs_at_the_next_start(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name = new_name("stopped")
    repo = f"apps/{name}"
    v2 = image_id("patrd-test/web:v2")
    skopeo_push(d, "patrd-test/web:v1", repo, "stable")
    await api.ok("POST", "/v1/deployments", node_registry_spec(name, repo))
    await until(lambda: rolled_out(api, name, 1), 60, "v1 deployed", d)
    await api.ok("POST", f"/v1/deployments/{name}/stop")
    await api.wait_status(name, "stopped")
    await until(lambda: not containers_of(name), 30, "instances removed", d)

    d2 = skopeo_push(d, "patrd-test/web:v2", repo, "stable")

    async def remembered() -> dict[str, Any] | None:
        dep = await api.ok("GET", f"/v1/deployments/{name}")
        return dep if dep["revision"] == 2 else None

    dep = await until(remembered, 30, "the push recorded as revision 2", d)
    assert dep["status"] == "stopped" and dep["intent"] == "stop"
    [pending, _] = await history(api, name)
    assert (pending["revision"], pending["how"], pending["state"]) == (2, "push", "pending")
    await asyncio.sleep(1)
    assert containers_of(name) == [], "a push does not start a stopped deployment"

    await api.ok("POST", f"/v1/deployments/{name}/start")
    await until(lambda: rolled_out(api, name, 2), 60, "started on the pushed image", d)
    assert image_of(d, name) == {v2}
    [entry, _] = await history(api, name)
    assert (entry["revision"], entry["how"], entry["digest"]) == (2, "push", d2)


async def test_a_probe_only_change_that_never_passes_fails_and_the_old_instances_serve(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name = new_name("probe")
    body = {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "scale": {"min": 2, "max": 2},
        "startup_probe": HEALTH,
    }
    await api.ok("POST", "/v1/deployments", body)
    await until(lambda: rolled_out(api, name, 1), 60, "revision 1 deployed", d)
    before = sorted(containers_of(name))
    never = {**HEALTH, "path": "/cgi-bin/no-such-path", "failure_threshold": 4}
    await api.ok("PATCH", f"/v1/deployments/{name}", {"startup_probe": never})

    async def failed() -> dict[str, Any] | None:
        entries = await history(api, name)
        return next((h for h in entries if h["revision"] == 2 and h["state"] == "failed"), None)

    served_ok = 0

    async def failed_while_v1_serves() -> dict[str, Any] | None:
        nonlocal served_ok
        assert "hello from v1" in await served(d, name), "the old instances keep serving"
        served_ok += 1
        return await failed()

    entry = await until(failed_while_v1_serves, 90, "revision 2 failed", d, interval=0.2)
    assert "startup probe /cgi-bin/no-such-path" in entry["reason"], entry
    assert served_ok > 3
    dep = await api.wait_status(name, "running")
    assert dep["revision"] == 1 and dep["stable_revision"] == 1
    await until(
        lambda: asyncio.sleep(0, result=sorted(containers_of(name)) == before),
        30,
        "only the old instances left",
        d,
    )


async def test_a_name_too_long_for_a_dns_label_is_refused(daemon: Daemon, api: Api) -> None:
    body = {"image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}
    status, err = await api.call("POST", "/v1/deployments", {"name": "a" * 58, **body})
    assert status == 422, err
    assert err["field"] == "name" and "57" in err["message"], err
    status, _ = await api.call(
        "POST", "/v1/deployments", {"name": "b" * 57, **body, "deploy_on_create": False}
    )
    assert status == 201
    await api.ok("DELETE", f"/v1/deployments/{'b' * 57}?confirm={'b' * 57}")


async def test_a_revert_to_an_image_gone_from_the_node_pulls_it_by_digest(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    name = new_name("gone")
    repo = f"apps/{name}"
    # An image of this test's own (docker rmi must not touch the shared test images).
    holder = subprocess.run(
        ["docker", "create", "patrd-test/web:v1"], capture_output=True, text=True, check=True
    ).stdout.strip()
    own = f"patrd-test/pin-{name}:v1"
    try:
        subprocess.run(
            ["docker", "commit", "--change", f"LABEL pin.test={name}", holder, own],
            capture_output=True,
            check=True,
        )
    finally:
        subprocess.run(["docker", "rm", holder], capture_output=True)
    own_id = image_id(own)
    try:
        d1 = skopeo_push(d, own, repo, "stable")
        await api.ok("POST", "/v1/deployments", node_registry_spec(name, repo))
        await until(lambda: rolled_out(api, name, 1), 60, "own image deployed", d)
        assert image_of(d, name) == {own_id}
        skopeo_push(d, "patrd-test/web:v2", repo, "stable")
        await until(lambda: rolled_out(api, name, 2), 60, "v2 rolled out on push", d)

        # Nothing on the node has the first image any more.
        subprocess.run(["docker", "rmi", "-f", own_id], capture_output=True, check=True)
        out = subprocess.run(["docker", "image", "inspect", own_id], capture_output=True)
        assert out.returncode != 0, "the image is gone"

        await api.ok("POST", f"/v1/deployments/{name}/revert", {"ref": own_id[:19]})
        await until(lambda: rolled_out(api, name, 3), 60, "revert pulled by digest", d)
        assert image_of(d, name) == {own_id}
        assert any(
            r.endswith(f"@{d1}") for r in docker_json("image", "inspect", own_id)[0]["RepoDigests"]
        )
        events = (await api.ok("GET", f"/v1/deployments/{name}/events?limit=1000"))["events"]
        assert any(e["kind"] == "pulled" and d1 in e["message"] for e in events), events
    finally:
        await api.call("DELETE", f"/v1/deployments/{name}?confirm={name}")
        await until(lambda: not containers_of(name), 60, "deployment removed", d)
        subprocess.run(["docker", "rmi", "-f", own], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", own_id], capture_output=True)
