"""Failures a user is told about, on the real engine: a crash loop is said to be one,
an engine start error and a vanished instance show at once, a deleted deployment's
certificate is retired, a create without ports takes the image's one port.

An image whose command exits at once (made here with ``docker commit``) must
show ``errored`` with its reason within 30 s, in the API, in ``patrctl list``
and ``show``, and in Prometheus' ``patrd_deployment_status``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bad_images import derived_image
from tests.support.daemon import Api, Daemon, containers_of, patrctl
from tests.support.waits import until

pytestmark = pytest.mark.docker


async def errored(api: Api, name: str, image: tuple[str, str]) -> tuple[str, float]:
    """Deploy ``image`` (repository, tag) as ``name`` and wait until it is errored: the
    status reason and the seconds that took."""
    started = time.monotonic()
    repository, tag = image
    body = {"name": name, "image": repository, "tag": tag, "ports": {"80": "http"}}
    await api.ok("POST", "/v1/deployments", body)
    shown = await api.wait_status(name, "errored", timeout=30)
    return str(shown["status_reason"]), time.monotonic() - started


async def test_crash_loop_is_errored_with_reason_everywhere(
    daemon: Daemon, api: Api, new_name, crash_image: tuple[str, str]
) -> None:
    name = new_name("crash")
    reason, took = await errored(api, name, crash_image)
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


async def test_engine_start_error_is_in_status_and_events_at_once(
    daemon: Daemon, api: Api, new_name, unstartable_image: tuple[str, str]
) -> None:
    name = new_name("nostart")
    reason, took = await errored(api, name, unstartable_image)
    assert f"instance {name}-0 could not start" in reason, reason
    assert "unable to find user nosuchuser" in reason, reason
    events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
    failed = [e for e in events if e["kind"] == "start_failed"]
    assert failed and "nosuchuser" in failed[0]["message"], events
    assert len(failed) <= 2, "one event per new message, not one per retry"
    print(f"engine start error reported after {took:.1f}s")


async def test_a_vanished_instance_is_an_event(daemon: Daemon, api: Api, new_name) -> None:
    name = new_name("vanish")
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
    )
    await api.wait_status(name, "running")
    [cid] = containers_of(name)
    subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=True)

    async def vanished_events() -> list[dict[str, object]]:
        events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
        return [e for e in events if e["kind"] == "vanished"]

    vanished = await until(vanished_events, 30, "a vanished event", daemon, interval=0.2)
    assert f"instance {name}-0 vanished" in str(vanished[0]["message"])
    await api.wait_status(name, "running")
    assert containers_of(name) != [cid]


async def test_certificates_of_deleted_deployments_are_retired(
    daemon: Daemon, api: Api, new_name
) -> None:
    kept, gone = new_name("keep"), new_name("gone")
    for name in (kept, gone):
        await api.ok(
            "POST",
            "/v1/deployments",
            {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
        )
    hosts = {name: f"80-{name}.{daemon.base_domain}" for name in (kept, gone)}

    async def issued() -> set[str]:
        certs = (await api.ok("GET", "/v1/certificates"))["certificates"]
        return {c["domain"] for c in certs if c["status"] == "issued"}

    async def all_issued() -> bool:
        return set(hosts.values()) <= await issued()

    await until(all_issued, 60, "both certificates issued", daemon, interval=0.2)
    cert_file = daemon.data_dir / "tls" / "certs" / f"{hosts[gone]}.pem"
    assert cert_file.exists()

    await api.ok("POST", f"/v1/deployments/{kept}/stop")  # stopped: keeps its certificate
    await api.ok("DELETE", f"/v1/deployments/{gone}?confirm={gone}")
    await api.wait_gone(gone)

    async def retired() -> set[str] | None:
        certs = (await api.ok("GET", "/v1/certificates"))["certificates"]
        listed = {c["domain"] for c in certs}
        return listed if hosts[gone] not in listed and not cert_file.exists() else None

    listed: set[str] = await until(retired, 30, "the certificate retired", daemon, interval=0.2)
    assert not cert_file.exists()
    assert hosts[kept] in listed
    assert (daemon.data_dir / "tls" / "certs" / f"{hosts[kept]}.pem").exists()


@pytest.fixture
def two_port_image(test_images: dict[str, str]) -> Iterator[tuple[str, str]]:
    """The web image, also declaring 8081 (its websocket port)."""
    yield from derived_image(test_images["v1"], "patrd-test/twoports", "EXPOSE 8081")


async def test_create_without_port_takes_the_images_one_port(
    daemon: Daemon, api: Api, new_name, two_port_image: tuple[str, str]
) -> None:
    name = new_name("noport")
    done = patrctl(daemon, "create", name, "--image", "patrd-test/web:v1", "--wait")
    assert done.returncode == 0, done.stderr
    shown = await api.ok("GET", f"/v1/deployments/{name}")
    assert shown["spec"]["ports"] == {"80": "http"}
    assert shown["status"] == "running"

    image, tag = two_port_image
    refused = patrctl(daemon, "create", new_name("twoport"), "--image", f"{image}:{tag}")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"patrctl: --port: is required: the image {image}:{tag} declares several ports (80, 8081)"
    )
