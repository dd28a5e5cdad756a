"""``patrctl create --image REPO[:TAG]@sha256:…`` against the daemon and the node registry.

The digest is checked against what the tag points at in the registry (real
digests: skopeo pushes, as in test_pinned_releases.py): the same one is
created, pinned and started; another one is refused with what to do, and the
deployment made for the check is removed again without ever having run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import Api, Daemon, containers_of, registry_addr
from tests.support.releases import history, image_id, image_of, skopeo_push
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker

PATRCTL = str(Path(sys.executable).parent / "patrctl")


def patrctl(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATRCTL, "--socket", str(d.socket), *args], capture_output=True, text=True, timeout=180
    )


async def test_create_at_a_digest_checks_it_against_the_tag_then_pins_it(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    d, api = registry_daemon, rapi
    repo = f"apps/{new_name('dg')}"
    d1 = skopeo_push(d, "patrd-test/web:v1", repo, "stable")
    d2 = skopeo_push(d, "patrd-test/web:v2", repo, "stable")  # stable moved on to v2
    assert skopeo_push(d, "patrd-test/web:v2", repo, "latest") == d2
    assert d1 != d2

    # An old digest of `stable`: refused, nothing runs, the name is free again.
    old = new_name("dgold")
    started = time.monotonic()
    refused = patrctl(
        d, "create", old, "--registry", "local", "--image", f"{repo}:stable@{d1}", "--port", "80"
    )
    took = time.monotonic() - started
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith(
        f"patrctl: --image {repo}:stable@{d1}: tag 'stable' points at {d2}, not {d1}; "
        f"{old} was removed again (it never ran)."
    ), refused.stderr
    assert f"patrctl revert NAME {d1}" in refused.stderr
    print(f"a digest the tag no longer points at refused in {took:.1f}s")
    await api.wait_gone(old)
    assert containers_of(old) == []

    # The digest `latest` points at (no tag given): created at it and running it.
    name = new_name("dgnew")
    done = patrctl(
        d, "create", name, "--registry", "local", "--image", f"{repo}@{d2}", "--port", "80",
        "--wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = await api.ok("GET", f"/v1/deployments/{name}")
    revision = shown["revision"]
    assert f"created {name} (revision {revision}) at {d2[:19]}" in done.stdout, done.stdout
    assert shown["status"] == "running" and shown["spec"]["tag"] == "latest"
    assert shown["spec"]["deploy_on_push"] is False  # stays at the digest when the tag moves
    await until(lambda: rolled_out(api, name, revision), 60, "the digest deployed", d)
    assert image_of(d, name) == {image_id("patrd-test/web:v2")}
    entry = next(h for h in await history(api, name) if h["revision"] == revision)
    assert entry["digest"] == d2, entry
    # Settings changes keep that image (the pin is carried).
    await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"AFTER": "1"}})
    await until(lambda: rolled_out(api, name, revision + 1), 60, "the env change deployed", d)
    assert (await history(api, name))[0]["digest"] == d2

    # --no-deploy: checked against the registry, not started.
    later = new_name("dglater")
    kept = patrctl(
        d, "create", later, "--registry", "local", "--image", f"{repo}:stable@{d2}",
        "--port", "80", "--no-deploy",
    )  # fmt: skip
    assert kept.returncode == 0, kept.stderr
    assert (await api.ok("GET", f"/v1/deployments/{later}"))["intent"] == "created"
    assert containers_of(later) == []


async def test_a_node_copy_that_differs_from_the_registry_is_caught(
    registry_daemon: Daemon, rapi: Api, new_name
) -> None:
    """The registry's tag is the digest asked for, but the node has its own older copy
    of that tag (present locally: used, not pulled): created, started, caught, removed."""
    d, api = registry_daemon, rapi
    repo = f"apps/{new_name('dgcopy')}"
    d2 = skopeo_push(d, "patrd-test/web:v2", repo, "moved")
    local = f"{registry_addr(d)}/{repo}:moved"
    subprocess.run(["docker", "tag", "patrd-test/web:v1", local], check=True)
    try:
        name = new_name("dgcopy")
        refused = patrctl(
            d, "create", name, "--registry", "local", "--image", f"{repo}:moved@{d2}",
            "--port", "80",
        )  # fmt: skip
    finally:
        subprocess.run(["docker", "rmi", local], capture_output=True)
    assert refused.returncode == 1, refused
    v1 = image_id("patrd-test/web:v1")
    assert refused.stderr.startswith(
        f"patrctl: --image {repo}:moved@{d2}: the registry's 'moved' is {d2}, but this node "
        f"ran its own copy, image {v1[:19]} (no digest); {name} was removed again."
    ), refused.stderr
    await api.wait_gone(name)
    assert containers_of(name) == []
