"""Notifications and node health through a real ``patrd serve`` on the real Docker engine."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Api, Daemon, patrctl
from tests.support.receivers import HttpReceiver, free_port
from tests.support.waits import rolled_out, until

pytestmark = pytest.mark.docker

HEALTH = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5, "failure_threshold": 4}


def patrctl_json(daemon: Daemon, *args: str) -> Any:
    """The real CLI against the daemon's socket; its JSON answer."""
    out = patrctl(daemon, "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else None


async def metrics(daemon: Daemon) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.get("http://patrd/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_failed_rollout_notifies_a_signed_webhook_only(
    daemon: Daemon, api: Api, new_name
) -> None:
    await api.ok("POST", "/v1/secrets", {"name": "hook-key", "value": "s1gning-key-for-ops"})
    async with HttpReceiver() as ops, HttpReceiver() as scaling:
        await api.ok(
            "POST",
            "/v1/notifications",
            {
                "name": "ops",
                "type": "webhook",
                "url": ops.url,
                "events": ["rollout.failed"],
                "secret": "hook-key",
            },
        )
        added = patrctl_json(
            daemon, "notify", "add", "scaling", "--type", "webhook", "--to-url", scaling.url,
            "--events", "autoscale,backup.*",
        )  # fmt: skip
        assert added["events"] == ["autoscale", "backup.*"] and added["source"] == "api"
        listed = patrctl_json(daemon, "notify", "list")["notifications"]
        assert {t["name"]: t["secret"] for t in listed if t["type"] == "webhook"} == {
            "ops": "hook-key",  # the secret's name; its value is never shown
            "scaling": None,
        }
        assert "s1gning-key-for-ops" not in json.dumps(listed)

        name = new_name("notify")
        await api.ok(
            "POST",
            "/v1/deployments",
            {
                "name": name,
                "image": "patrd-test/web",
                "tag": "v1",
                "ports": {"80": "http"},
                "env": {"SESSION_KEY": "plain-env-value-42"},
                "startup_probe": HEALTH,
            },
        )
        await until(lambda: rolled_out(api, name, 1), 60, "revision 1 deployed", daemon)
        await api.ok(
            "PATCH", f"/v1/deployments/{name}", {"env": {"UNHEALTHY": "1"}}
        )  # the new instance never passes its startup probe
        got = await ops.wait(1, timeout=120)
        await asyncio.sleep(2)  # anything else for ops or scaling would be here by now
        stats = await metrics(daemon)

    assert len(ops.got) == 1, [g.body for g in ops.got]
    hit = got[0]
    expected = hmac.new(b"s1gning-key-for-ops", hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["X-Patrd-Signature"], f"sha256={expected}")
    payload = hit.json()
    assert payload["kind"] == "rollout.failed" and payload["deployment"] == name
    assert payload["revision"] == 2 and "back to revision 1" in payload["message"]
    assert "plain-env-value-42" not in hit.body.decode()
    assert scaling.got == []  # its filter took nothing of this
    sent = {
        (s.labels["target"], s.labels["result"]): s.value
        for s in stats["patrd_notify_deliveries"].samples
        if s.name.endswith("_total")
    }
    assert sent == {("ops", "sent"): 1.0}
    assert patrctl_json(daemon, "notify", "rm", "scaling") is None
    remaining = [t["name"] for t in patrctl_json(daemon, "notify", "list")["notifications"]]
    assert remaining == ["ops"]


async def test_node_endpoint_matches_psutil(daemon: Daemon, api: Api) -> None:
    before_net = psutil.net_io_counters()
    node = await api.ok("GET", "/v1/node")
    after_net = psutil.net_io_counters()
    vm = psutil.virtual_memory()
    data_disk = psutil.disk_usage(str(daemon.data_dir))
    tolerance_bytes = 0.02 * data_disk.total  # other engineers write to this disk meanwhile

    assert node["cpu"]["count"] == psutil.cpu_count()
    assert 0.0 <= node["cpu"]["percent"] <= 100.0
    assert node["memory"]["total"] == vm.total
    assert abs(node["memory"]["available"] - vm.available) < 0.05 * vm.total
    assert node["swap"]["total"] == psutil.swap_memory().total
    load = os.getloadavg()
    assert abs(node["load"]["1m"] - load[0]) < 2.0 and abs(node["load"]["15m"] - load[2]) < 1.0
    disks = {d["label"]: d for d in node["disks"]}
    data = disks["data"]
    assert data["path"] == str(daemon.data_dir)
    assert data["total"] == data_disk.total
    assert abs(data["free"] - data_disk.free) < tolerance_bytes
    root = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert disks["docker"]["path"] == root  # asked from Docker: [node] docker_root is unset
    assert disks["docker"]["total"] == psutil.disk_usage(root).total
    # Host-wide sums over every interface: not monotonic when another test's
    # container (its veth) goes away between two reads, so a tolerance, not an order.
    for key in ("bytes_recv", "bytes_sent"):
        low = min(getattr(before_net, key), getattr(after_net, key))
        high = max(getattr(before_net, key), getattr(after_net, key))
        assert low * 0.95 <= node["network"][key] <= high * 1.05, (key, node["network"], low, high)
    assert node["thresholds"] == {"disk_low_percent": 10.0, "memory_low_percent": 10.0}
    print(
        f"memory available: api {node['memory']['available'] / 2**30:.2f} GiB, psutil "
        f"{vm.available / 2**30:.2f} GiB; data free: api {data['free'] / 2**30:.2f} GiB, "
        f"psutil {data_disk.free / 2**30:.2f} GiB"
    )

    text = patrctl_json(daemon, "node")
    assert text["memory"]["total"] == vm.total
    families = await metrics(daemon)
    memory = {s.labels["kind"]: s.value for s in families["patrd_node_memory_bytes"].samples}
    assert memory["total"] == vm.total
    disk_totals = {
        s.labels["label"]: s.value
        for s in families["patrd_node_disk_bytes"].samples
        if s.labels["kind"] == "total"
    }
    assert disk_totals["data"] == data_disk.total
    assert "patrd_node_cpu_percent" in families and "patrd_notify_dropped" in families


class NotifyingDaemon(Daemon):
    """A daemon whose config file also holds ``[[notify]]`` tables (arrays of tables)."""

    notify_toml: str = ""

    def config_path(self) -> Path:
        path = super().config_path()
        path.write_text(path.read_text() + "\n" + self.notify_toml)
        return path


async def test_config_target_gets_memory_pressure_from_node_thresholds(tmp_path: Path) -> None:
    async with HttpReceiver() as hook:
        daemon = NotifyingDaemon(
            tmp_path, config={"node": {"interval_s": 1, "memory_low_percent": 99}}
        )
        daemon.notify_toml = (
            f'[[notify]]\nname = "pager"\ntype = "webhook"\nurl = "{hook.url}"\n'
            'events = ["memory.*"]\n'
        )
        daemon.start()
        try:
            got = await hook.wait(1, timeout=30)
            async with Api(daemon) as api:
                node = await api.ok("GET", "/v1/node")
                listed = (await api.ok("GET", "/v1/notifications"))["notifications"]
                code, _ = await api.call("DELETE", "/v1/notifications/pager")
        finally:
            daemon.stop()
    payload = got[0].json()
    assert payload["kind"] == "memory.pressure" and payload["deployment"] is None
    assert "of memory available" in payload["message"] and "under 99%" in payload["message"]
    assert "memory" in node["alerts"]
    assert [e["kind"] for e in node["events"]].count("memory.pressure") == 1
    assert [(t["name"], t["source"], t["sent"]) for t in listed] == [("pager", "config", 1)]
    assert code == 409  # a config target is removed by editing the file
    assert len(hook.got) == 1  # once per crossing, not every second


async def test_dead_receiver_is_given_up_and_shows_in_node_events_and_metrics(
    daemon: Daemon, api: Api, new_name
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    await api.ok(
        "POST",
        "/v1/notifications",
        {"name": "dead", "type": "webhook", "url": dead, "events": ["rollout.*"]},
    )
    name = new_name("dead")
    started = time.monotonic()
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
    )
    await until(lambda: rolled_out(api, name, 1), 60, "revision 1 deployed", daemon)
    rolled_s = time.monotonic() - started

    async def given_up() -> list[dict[str, Any]]:
        node = await api.ok("GET", "/v1/node")
        return [e for e in node["events"] if e["kind"] == "notify.failed"]

    # 5 tries, 1 + 2 + 4 + 8 s apart: given up after about 15 s.
    failed = await until(given_up, 60, "notify.failed node event", daemon, interval=0.5)
    gave_up_s = time.monotonic() - started
    families = await metrics(daemon)
    counts = {
        (s.labels["target"], s.labels["result"]): s.value
        for s in families["patrd_notify_deliveries"].samples
        if s.name.endswith("_total")
    }
    retries = {
        s.labels["target"]: s.value
        for s in families["patrd_notify_retries"].samples
        if s.name.endswith("_total")
    }
    print(f"rolled out in {rolled_s:.1f} s; dead receiver given up after {gave_up_s:.1f} s")
    assert (
        "rollout.succeeded" in failed[0]["message"] and "after 5 attempt(s)" in failed[0]["message"]
    )
    assert counts[("dead", "failed")] >= 1 and retries["dead"] >= 4
    listed = (await api.ok("GET", "/v1/notifications"))["notifications"]
    assert listed[0]["failed"] >= 1 and listed[0]["sent"] == 0
