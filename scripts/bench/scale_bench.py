"""N deployments x M instances: what one daemon costs as it grows (see scripts/bench/scale)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from scripts.bench.table import render
from tests.support.daemon import Api, Daemon, force_cleanup
from tests.support.images import build_test_images

IDLE_S = 20.0
API_REQUESTS = 200
PAGE = 50  # deployments per page for the paged list (what patrctl asks for: 100)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _timed(api: Api, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await api.ok("GET", path)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


async def _prometheus(daemon: Daemon) -> dict[str, float]:
    """The sampler's own figures, and what one scrape costs (time, bytes)."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            async with s.get("http://patrd/metrics") as resp:
                text = await resp.text()
            times.append((time.perf_counter() - start) * 1000)
    wanted = {"patrd_metrics_sample_duration_seconds", "patrd_metrics_sampled_instances"}
    out = {
        f.name: f.samples[0].value
        for f in text_string_to_metric_families(text)
        if f.name in wanted and f.samples
    }
    out["scrape_ms"] = statistics.median(times)
    out["scrape_kb"] = len(text.encode()) / 1024
    return out


async def _idle_cpu(pid: int, profile: Path | None) -> float:
    """The daemon's CPU % over IDLE_S; with `profile`, py-spy samples it meanwhile."""
    spy = None
    if profile is not None:
        spy = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--duration", str(int(IDLE_S)),
            "--rate", "50", "--format", "raw", "--output", str(profile), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    cpu0, t0 = _cpu_s(pid), time.monotonic()
    await asyncio.sleep(IDLE_S)
    idle = (_cpu_s(pid) - cpu0) / (time.monotonic() - t0) * 100
    if spy is not None:
        await spy.wait()
    return idle


async def one_size(
    workdir: Path, deployments: int, instances: int, profile: Path | None = None
) -> dict[str, Any]:
    daemon = Daemon(workdir, config={"docker": {"resync_interval_s": 15}})
    names = [f"scale-{uuid.uuid4().hex[:6]}" for _ in range(deployments)]
    daemon.start()
    try:
        async with Api(daemon) as api:
            created = time.perf_counter()
            for name in names:
                await api.ok(
                    "POST",
                    "/v1/deployments",
                    {
                        "name": name,
                        "image": "patrd-test/web",
                        "tag": "v1",
                        "ports": {"80": "http"},
                        "scale": {"min": instances, "max": instances},
                        "resources": {"cpu": 0.25, "memory_mb": 64},
                    },
                )
            for name in names:
                await api.wait_status(name, "running", timeout=600)
            all_running_s = time.perf_counter() - created
            await asyncio.sleep(12)  # a few sampling passes, settle
            assert daemon.proc is not None
            pid = daemon.proc.pid
            idle_cpu = await _idle_cpu(pid, profile)
            rss = _rss_mb(pid)
            proxy_rss = sum(_rss_mb(c) for c in _children(pid))
            sampling = await _prometheus(daemon)
            lists = await _timed(api, "/v1/deployments", API_REQUESTS)
            pages = await _timed(api, f"/v1/deployments?limit={PAGE}", API_REQUESTS)
            shows = await _timed(api, f"/v1/deployments/{names[0]}", API_REQUESTS)
        # A full reconcile pass: restart the daemon; it adopts every running
        # container (no restarts) and re-checks each before the API answers.
        daemon.stop()
        started = time.perf_counter()
        daemon.start()
        adopt_s = time.perf_counter() - started
        async with Api(daemon) as api:
            for name in names:
                await api.wait_status(name, "running", timeout=120)
            settled_s = time.perf_counter() - started
        total = deployments * instances
        tick = sampling.get("patrd_metrics_sample_duration_seconds", 0.0)
        sampled = sampling.get("patrd_metrics_sampled_instances", 0.0)
        return {
            "deployments": deployments,
            "instances": total,
            "create_to_all_running_s": round(all_running_s, 1),
            "rss_mb": round(rss, 1),
            "proxy_rss_mb": round(proxy_rss, 1),
            "idle_cpu_pct": round(idle_cpu, 2),
            "list_p50_ms": round(statistics.median(lists), 2),
            "list_p99_ms": round(_p(lists, 0.99), 2),
            "page_p99_ms": round(_p(pages, 0.99), 2),
            "show_p50_ms": round(statistics.median(shows), 2),
            "show_p99_ms": round(_p(shows, 0.99), 2),
            "restart_to_api_s": round(adopt_s, 2),
            "restart_to_all_running_s": round(settled_s, 2),
            "sampling_pass_ms": round(tick * 1000, 2),
            "sampling_per_instance_ms": round(tick * 1000 / sampled, 3) if sampled else None,
            "scrape_ms": round(sampling["scrape_ms"], 1),
            "scrape_kb": round(sampling["scrape_kb"], 1),
        }
    finally:
        daemon.stop()
        force_cleanup(names)


COLUMNS = (
    ("deployments", "deps"),
    ("instances", "inst"),
    ("create_to_all_running_s", "up s"),
    ("rss_mb", "RSS MB"),
    ("proxy_rss_mb", "proxy RSS MB"),
    ("idle_cpu_pct", "idle CPU%"),
    ("list_p99_ms", "list p99 ms"),
    ("page_p99_ms", "page p99 ms"),
    ("show_p99_ms", "show p99 ms"),
    ("restart_to_api_s", "restart→API s"),
    ("restart_to_all_running_s", "restart→running s"),
    ("sampling_pass_ms", "sample pass ms"),
    ("sampling_per_instance_ms", "per inst ms"),
    ("scrape_ms", "scrape ms"),
    ("scrape_kb", "scrape KiB"),
)


def table(rows: list[dict[str, Any]]) -> str:
    return render(COLUMNS, rows)


SLOPED = (
    "rss_mb",
    "proxy_rss_mb",
    "idle_cpu_pct",
    "list_p99_ms",
    "restart_to_all_running_s",
    "sampling_pass_ms",
    "scrape_ms",
)


def slopes(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Cost per extra instance between the smallest and the largest size."""
    if len(rows) < 2:
        return {}
    first, last = rows[0], rows[-1]
    span = last["instances"] - first["instances"]
    if span <= 0:
        return {}
    return {
        key: round((last[key] - first[key]) / span, 5)
        for key in SLOPED
        if isinstance(first.get(key), int | float) and isinstance(last.get(key), int | float)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1x4,5x4,25x4", help="NxM,… (deployments x instances)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the daemon over each idle window; collapsed stacks to DIR/idle-NxM.txt",
    )
    args = parser.parse_args()
    build_test_images()
    sizes = [tuple(int(x) for x in part.split("x")) for part in args.sizes.split(",")]
    rows = []
    for deployments, instances in sizes:
        with tempfile.TemporaryDirectory(prefix="patrd-bench-scale-") as tmp:
            spy = (
                Path(args.profile) / f"idle-{deployments}x{instances}.txt" if args.profile else None
            )
            row = asyncio.run(one_size(Path(tmp), deployments, instances, spy))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    slope = slopes(rows)
    if slope:
        print("\nper extra instance: " + ", ".join(f"{k} {v:+g}" for k, v in slope.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": rows, "slope": slope}, indent=2) + "\n")


if __name__ == "__main__":
    main()
