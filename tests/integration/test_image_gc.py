"""Image garbage collection that knows about rollbacks, and the disk guard (real engine,
a real registry: Debian's docker-registry)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon
from tests.support.registry import plain_registry, push_when_up
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker

HEALTH = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5, "failure_threshold": 6}


def sh(*cmd: str, check: bool = True) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode:
        raise AssertionError(f"{' '.join(cmd)}: {out.stderr}")
    return out.stdout.strip()


def image_exists(image_id: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image_id], capture_output=True).returncode
        == 0
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with plain_registry(tmp_path) as address:
        yield address


class Images:
    """Images this test builds (distinct ids, shared layers) and removes afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "build"
        self.dir.mkdir()
        self.ids: list[str] = []

    def build(self, base: str, tag: str) -> str:
        (self.dir / "Dockerfile").write_text(
            f"FROM {base}\nLABEL patrd.test.gc={uuid.uuid4().hex}\n"
        )
        sh("docker", "build", "-q", "-t", tag, str(self.dir))
        image_id = sh("docker", "image", "inspect", "-f", "{{.Id}}", tag)
        self.ids.append(image_id)
        return image_id

    def push(self, registry: str, ref: str) -> None:
        push_when_up(f"{registry}/{ref}")

    def publish(self, registry: str, base: str, ref: str) -> str:
        """Build an image, push it as ``ref``, and drop it locally: only a pull brings it back."""
        image_id = self.build(base, f"{registry}/{ref}")
        self.push(registry, ref)
        sh("docker", "rmi", f"{registry}/{ref}")
        assert not image_exists(image_id)
        return image_id

    def cleanup(self) -> None:
        for image_id in self.ids:
            subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Images]:
    built = Images(tmp_path)
    try:
        yield built
    finally:
        built.cleanup()


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ports": {"80": "http"}, "startup_probe": HEALTH, **extra}


async def events(api: Api, name: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/v1/deployments/{name}/events?limit=1000"))["events"])


async def test_gc_keeps_last_releases_and_the_running_one_and_what_patrd_did_not_pull(
    tmp_path: Path, test_images: dict[str, str], registry: str, images: Images, new_name
) -> None:
    name = new_name("gc")
    ref = f"gc/{name}:latest"  # each redeploy pins what was pushed last
    d = Daemon(tmp_path / "d")
    d.workdir.mkdir()
    d.config = {"images": {"keep_releases": 1, "gc_interval_s": 1}}
    # Release 1's image is here before patrd pulls: the pull brings nothing new,
    # so patrd did not pull it and never removes it.
    mine = images.build("patrd-test/web:v1", f"{registry}/{ref}")
    images.push(registry, ref)
    d.start()
    try:
        async with Api(d) as api:
            await api.ok(
                "POST",
                "/v1/deployments",
                spec(name, registry=registry, image=f"gc/{name}", tag="latest"),
            )
            await until(lambda: rolled_out(api, name, 1), 60, "release 1 out", d)
            pulled = []
            for revision, base in ((2, "v2"), (3, "v1"), (4, "v2")):

                async def out(r: int = revision) -> Any:
                    return await rolled_out(api, name, r)

                image_id = images.publish(registry, f"patrd-test/web:{base}", ref)
                pulled.append(image_id)
                # A new release is an explicit act (pinned releases): redeploy the tag.
                await api.ok("POST", f"/v1/deployments/{name}/redeploy")
                await until(out, 60, f"release {revision} out", d)
                assert image_exists(image_id)
            r2, r3, r4 = pulled
            # keep_releases = 1: the images of releases 2 and 3 go; release 1's stays
            # (patrd did not pull it), release 4's runs.
            await until(lambda: not image_exists(r2) and not image_exists(r3), 20, "gc", d)
            assert image_exists(mine), "an image patrd did not pull was removed"
            assert image_exists(r4)

            # A release that fails: it is the last release now, while release 4 still runs.
            broken = images.publish(registry, "patrd-test/web:broken", ref)
            await api.ok("POST", f"/v1/deployments/{name}/redeploy")

            async def failed() -> bool:
                history = (await api.ok("GET", f"/v1/deployments/{name}/history"))["history"]
                return bool(history) and history[0]["state"] == "failed"

            await until(failed, 60, "release 5 failed", d)
            await until(lambda: rolled_out(api, name, 4), 30, "back on release 4", d)
            for _ in range(3):  # several GC passes (one a second)
                time.sleep(1.2)
                assert image_exists(r4), "the running release's image was removed"
                assert image_exists(broken), "the last release's image was removed"
            assert image_exists(mine)
            assert not image_exists(r2) and not image_exists(r3)
            log = d.log_path.read_text()
            assert log.count("image_removed") == 2, log.count("image_removed")
    finally:
        d.stop()


async def test_disk_guard_refuses_pulls_with_a_reason_and_metrics_show_free_space(
    tmp_path: Path, test_images: dict[str, str], registry: str, images: Images, new_name
) -> None:
    pulled, local = new_name("dg"), new_name("dgl")
    r1 = images.publish(registry, "patrd-test/web:v1", f"dg/{pulled}:r1")
    d = Daemon(tmp_path / "d")
    d.workdir.mkdir()
    # More free space than any disk has: every pull is refused.
    d.config = {"disk": {"min_free": "100%", "check_interval_s": 1}}
    d.start()
    try:
        async with Api(d) as api:
            await api.ok(
                "POST",
                "/v1/deployments",
                spec(pulled, registry=registry, image=f"dg/{pulled}", tag="r1"),
            )
            dep = await api.wait_status(pulled, "errored", 30)
            reason = dep["status_reason"]
            assert "disk low" in reason and "disk.min_free 100%" in reason, reason
            assert "image pulls refused" in reason, reason
            kinds = [e["kind"] for e in await events(api, pulled)]
            assert "pull_refused" in kinds, kinds
            assert "pulled" not in kinds
            assert not image_exists(r1)
            # An image already here needs no pull: it still deploys.
            await api.ok("POST", "/v1/deployments", spec(local, image="patrd-test/web", tag="v1"))
            await until(lambda: rolled_out(api, local, 1), 60, "local image deployed", d)

            async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(d.socket))
            ) as http:
                async with http.get("http://patrd/metrics") as resp:
                    text = await resp.text()
            free = [line for line in text.splitlines() if line.startswith("patrd_disk_free_bytes")]
            roles = {line.split('role="')[1].split('"')[0] for line in free}
            assert roles == {"docker", "data_dir"}, free
            assert all(float(line.rsplit(" ", 1)[1]) > 0 for line in free), free
            assert "patrd_disk_pulls_refused 1.0" in text
        d.stop()

        # Space back (the default threshold): the retry pulls and deploys.
        d.config = {"disk": {"min_free": "1MiB", "check_interval_s": 1}}
        d.start()
        async with Api(d) as api:
            await until(lambda: rolled_out(api, pulled, 1), 90, "pulled once space is back", d)
            assert image_exists(r1)
    finally:
        d.stop()
