"""The console a new user expects, on the real engine: a crash loop is said to be one.

An image whose command exits at once (made here with ``docker commit``) must
show ``errored`` with its reason within 30 s, in the API, in ``patrctl list``
and ``show``, and in Prometheus' ``patrd_deployment_status``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Api, Daemon

pytestmark = pytest.mark.docker

PATRCTL = str(Path(sys.executable).parent / "patrctl")


@pytest.fixture
def crash_image(test_images: dict[str, str]) -> Iterator[tuple[str, str]]:
    """``patrd-test/crash:<unique>``: prints a line on stderr and exits 3."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    ref = f"patrd-test/crash:{tag}"
    cid = subprocess.run(
        ["docker", "create", test_images["v1"]], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        subprocess.run(
            [
                "docker",
                "commit",
                "--change",
                'CMD ["/bin/sh", "-c", "echo boom >&2; exit 3"]',
                cid,
                ref,
            ],
            capture_output=True,
            check=True,
        )
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    try:
        yield "patrd-test/crash", tag
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def patrctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATRCTL, "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_crash_loop_is_errored_with_reason_everywhere(
    daemon: Daemon, api: Api, new_name, crash_image: tuple[str, str]
) -> None:
    name = new_name("crash")
    image, tag = crash_image
    started = time.monotonic()
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, "image": image, "tag": tag, "ports": {"80": "http"}},
    )
    shown = await api.wait_status(name, "errored", timeout=30)
    took = time.monotonic() - started
    reason = shown["status_reason"]
    assert "crash loop" in reason and "exited with code 3" in reason, reason
    print(f"crash loop reported errored after {took:.1f}s")

    listed = patrctl(daemon, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert "errored" in row and "crash loop" in row, listed.stdout

    show = patrctl(daemon, "show", name)
    assert show.returncode == 0, show.stderr
    assert f"errored ({reason.split(';')[0]}" in show.stdout, show.stdout

    metrics = await _prometheus(daemon)
    samples = {
        (s.labels["deployment"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "patrd_deployment_status"
        for s in family.samples
    }
    assert samples.get((name, "errored")) == 1.0, samples


async def _prometheus(daemon: Daemon) -> str:
    import aiohttp

    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.get("http://patrd/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()
