"""Logs, metrics, autoscaling and Prometheus on the real engine (issue 7)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Api, Daemon, containers_of, running_daemon
from tests.support.specs import web_spec
from tests.support.waits import until

# serial: CPU burns measured in cores (scripts/test runs these alone, after the parallel part).
pytestmark = [pytest.mark.docker, pytest.mark.serial]

FAST = {
    "metrics": {"interval_s": 1},
    "autoscale": {"interval_s": 1, "window_s": 4, "stabilization_s": 6},
}


@pytest.fixture
def fast_daemon(tmp_path: Path, test_images: dict[str, str], names: list[str]) -> Iterator[Daemon]:
    with running_daemon(tmp_path, FAST) as d:
        yield d


@pytest.fixture
async def fast_api(fast_daemon: Daemon):
    async with Api(fast_daemon) as client:
        yield client


def body(name: str, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return web_spec(name, replicas, **extra)


async def get_lines(daemon: Daemon, name: str, query: str = "") -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.get(f"http://patrd/v1/deployments/{name}/logs{query}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/x-ndjson"
        return [json.loads(line) for line in (await resp.text()).splitlines()]


async def test_logs_merged_and_followed_across_a_rollout(
    daemon: Daemon, api: Api, new_name
) -> None:
    name = new_name("logs")
    await api.ok("POST", "/v1/deployments", body(name, 2, env={"LOG_EVERY": "0.3"}))
    await api.wait_status(name, "running")
    await asyncio.sleep(3)

    lines = await get_lines(daemon, name, "?tail=20")
    assert len(lines) == 20
    assert [x["t"] for x in lines] == sorted(x["t"] for x in lines)
    assert {x["instance"] for x in lines} == {f"{name}-0", f"{name}-1"}
    assert {x["stream"] for x in lines} == {"stdout", "stderr"}
    for x in lines:  # odd lines on stderr, even on stdout (the image's LOG_EVERY loop)
        if x["line"].startswith("line "):
            n = int(x["line"].split()[1])
            assert x["stream"] == ("stderr" if n % 2 else "stdout"), x
    one = await get_lines(daemon, name, f"?tail=5&instance={name}-1&format=json")
    assert len(one) == 5 and {x["instance"] for x in one} == {f"{name}-1"}

    followed: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(daemon.socket))
    ) as session:

        async def follow() -> None:
            async with session.get(
                f"http://patrd/v1/deployments/{name}/logs?tail=0&follow=true",
                timeout=aiohttp.ClientTimeout(total=120),
            ) as resp:
                assert resp.status == 200
                async for raw in resp.content:
                    followed.append(json.loads(raw))

        reader = asyncio.create_task(follow())
        try:
            await asyncio.sleep(3)
            before_rollout = len(followed)
            await api.ok(
                "PATCH", f"/v1/deployments/{name}", {"env": {"LOG_EVERY": "0.3", "R": "2"}}
            )

            async def rolled() -> bool:
                dep = await api.ok("GET", f"/v1/deployments/{name}")
                return bool(dep["stable_revision"] == 2 and dep["status"] == "running")

            await until(rolled, 60, "revision 2 rolled out", daemon)
            await asyncio.sleep(2.5)  # past the reorder buffer
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    assert before_rollout > 0, "no followed line before the rollout"
    revisions = {(x["instance"], x["revision"]) for x in followed}
    assert {(f"{name}-0", 2), (f"{name}-1", 2)} <= revisions, revisions
    assert {(f"{name}-0", 1), (f"{name}-1", 1)} <= revisions, revisions
    starts = [x for x in followed if x["line"].startswith("start ") and x["revision"] == 2]
    assert len(starts) == 2, "each new instance's first line joined the stream"
    stamps = [x["t"] for x in followed]
    assert stamps == sorted(stamps), "followed lines in timestamp order"
    keys = [(x["container"], x["t"], x["line"]) for x in followed]
    assert len(keys) == len(set(keys)), "no line twice"

    # The removed revision-1 instances' logs are still served (kept by patrd).
    after = await get_lines(daemon, name, "?tail=all")
    kept = [x for x in after if x.get("removed")]
    assert {x["instance"] for x in kept} == {f"{name}-0", f"{name}-1"}
    assert {x["revision"] for x in kept} == {1}
    assert any(x["line"].startswith("start ") for x in kept)
    assert [x["t"] for x in after] == sorted(x["t"] for x in after)
    files = list((daemon.data_dir / "logs").rglob("*.jsonl"))
    assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    print(f"followed {len(followed)} lines across the rollout; {len(kept)} kept lines")


def _proc_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of host processes from /proc (independent of cgroups)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


async def test_cpu_usage_of_a_one_core_burn_reads_one_core(
    fast_daemon: Daemon, fast_api: Api, new_name
) -> None:
    name = new_name("burn")
    spec = body(name, env={"BURN": "1"}, resources={"cpu": 2, "memory_mb": 128})
    await fast_api.ok("POST", "/v1/deployments", spec)
    await fast_api.wait_status(name, "running")
    (cid,) = containers_of(name)
    out = subprocess.run(
        ["docker", "top", cid, "-eo", "pid,comm"], capture_output=True, text=True, check=True
    ).stdout
    pids = [int(line.split()[0]) for line in out.splitlines()[1:] if line.split()[1] == "yes"]
    assert len(pids) == 1, out

    # Ground truth: the burner's own CPU time from /proc over the same window.
    # The host may be busy (other tests): then the burner gets less than a core,
    # and patrd must read what it really got; with a core to itself, ~1.0.
    readings = []
    for _attempt in range(3):
        t0, c0 = time.time(), _proc_cpu_seconds(pids)
        await asyncio.sleep(10)
        t1, c1 = time.time(), _proc_cpu_seconds(pids)
        truth = (c1 - c0) / (t1 - t0)
        data = await fast_api.ok("GET", f"/v1/deployments/{name}/metrics?range=hour")
        window = [p for p in data["points"] if t0 + 1 <= _unix(p["t"]) <= t1]
        assert len(window) >= 6, data["points"][-12:]
        patrd = sum(p["cpu_cores"] for p in window) / len(window)
        readings.append((round(patrd, 3), round(truth, 3)))
        if truth >= 0.95:
            break
    patrd, truth = readings[-1]
    print(f"one-core burn: patrd {patrd:.3f} cores, /proc {truth:.3f} cores; tries {readings}")
    assert abs(patrd - truth) <= 0.1, readings
    if truth >= 0.95:  # the burner had a core to itself: exactly what the issue asks
        assert abs(patrd - 1.0) <= 0.1, readings
    current = data["current"][0]
    assert current["cpu_allocation_cores"] == 2.0
    assert abs(current["cpu_usage"] - current["cpu_cores"] / 2) < 1e-3
    assert current["source"] in ("cgroup v1", "cgroup v2")
    assert 0 < current["memory_bytes"] <= 128 * 1024 * 1024
    assert current["memory_limit_bytes"] == 128 * 1024 * 1024


def _unix(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def test_autoscaler_follows_a_cpu_burn_up_and_down_and_prometheus_reports_it(
    fast_daemon: Daemon, fast_api: Api, new_name
) -> None:
    daemon, api = fast_daemon, fast_api
    name = new_name("auto")
    spec = body(name, resources={"cpu": 0.5, "memory_mb": 64})
    spec["scale"] = {"min": 1, "max": 3, "target_cpu": 80}
    created = await api.ok("POST", "/v1/deployments", spec)
    assert created["replicas"] == 1 and created["estimated_cost"]["max"] == 0.0
    await api.wait_status(name, "running")
    await asyncio.sleep(2)  # a first CPU sample

    timeline: list[tuple[float, str]] = []
    start = time.monotonic()
    async with aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{daemon.proxy_port}/cgi-bin/burn?seconds=14"
        async with s.get(url, headers={"Host": daemon.host(name)}) as resp:
            assert resp.status == 200, await resp.text()
        timeline.append((0.0, "burn 1 core for 14 s on the only instance (allocation 0.5)"))

        async def ready_count() -> int:
            dep = await api.ok("GET", f"/v1/deployments/{name}")
            return sum(1 for i in dep["instances"] if i["ready"] and i["current"])

        async def scaled_up() -> bool:
            dep = await api.ok("GET", f"/v1/deployments/{name}")
            return bool(dep["replicas"] >= 2) and await ready_count() >= 2

        await until(scaled_up, 20, "scaled up to 2+", daemon)
        timeline.append((time.monotonic() - start, "2 instances ready"))

        async def scaled_down() -> bool:
            dep = await api.ok("GET", f"/v1/deployments/{name}")
            return bool(dep["replicas"] == 1) and len(dep["instances"]) == 1

        await until(scaled_down, 45, "back to 1", daemon)
        timeline.append((time.monotonic() - start, "back to 1 instance"))

        for _ in range(3):  # some proxied traffic for the request counters
            async with s.get(
                f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": daemon.host(name)}
            ) as resp:
                assert resp.status == 200

    events = (await api.ok("GET", f"/v1/deployments/{name}/events?limit=200"))["events"]
    scale = [e for e in events if e["kind"] == "autoscale"]
    assert [e["message"].split(":")[0] for e in scale] == ["scale up 1 → 2", "scale down 2 → 1"]
    assert "above target 80%" in scale[0]["message"] and "ceil(1 * " in scale[0]["message"]
    assert "highest recommendation" in scale[1]["message"]
    assert all(e["revision"] is None for e in scale)  # no new revision
    dep = await api.ok("GET", f"/v1/deployments/{name}")
    assert dep["revision"] == 1
    print("autoscale timeline: " + "; ".join(f"{t:5.1f}s {what}" for t, what in timeline))
    assert timeline[1][0] < 15, timeline

    # Prometheus: parses, and has the families issue 7 lists.
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.get("http://patrd/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in (
        "patrd_instance_cpu_seconds",
        "patrd_instance_cpu_usage_ratio",
        "patrd_instance_memory_working_set_bytes",
        "patrd_instance_network_receive_bytes",
        "patrd_instance_network_transmit_bytes",
        "patrd_proxy_requests",
        "patrd_proxy_request_duration_seconds",
        "patrd_instance_probe_phase",
        "patrd_probe_failures",
        "patrd_restarts",
        "patrd_rollouts",
        "patrd_autoscale_decisions",
        "patrd_certificate_expiry_timestamp_seconds",
        "patrd_firewall_packets",
    ):
        assert family in families, family

    def value(family: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if all(s.labels.get(k) == v for k, v in labels.items())
            and not s.name.endswith(("_created", "_bucket", "_sum", "_count"))
        )

    assert value("patrd_proxy_requests", deployment=name, code="2xx") >= 4
    assert families["patrd_proxy_request_duration_seconds"].type == "histogram"
    count = [
        s
        for s in families["patrd_proxy_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["deployment"] == name
    ]
    assert count and count[0].value >= 4
    assert value("patrd_autoscale_decisions", deployment=name, direction="up") == 1
    assert value("patrd_autoscale_decisions", deployment=name, direction="down") == 1
    assert value("patrd_rollouts", deployment=name, result="deployed") == 1
    assert value("patrd_instance_cpu_seconds", deployment=name) > 1.0
    assert value("patrd_certificate_expiry_timestamp_seconds") > time.time()
