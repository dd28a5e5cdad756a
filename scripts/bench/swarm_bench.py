"""The swarm backend on 1 vs 3 nodes (see scripts/bench/swarm).

For each swarm size: a real swarm on this machine, a patrd daemon with
``engine.backend = "swarm"`` on its manager, then per run a deployment of
``--instances`` instances: ``POST`` → the first 200 through patrd's proxy,
``POST`` → every instance ready, and a rollout (an env change) → revision 2
fully out. Every wait is bounded; the swarm is torn down after each size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import Api, Daemon
from tests.support.images import build_test_images
from tests.support.swarm import swarm_cluster

WAIT_S = 300.0


async def _bounded(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what}: not within {WAIT_S}s")


async def one_run(daemon: Daemon, api: Api, instances: int) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    spec = {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "scale": {"min": instances, "max": instances},
        "startup_probe": {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5},
    }
    url = f"http://127.0.0.1:{daemon.proxy_port}/"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def answers() -> bool:
            try:
                async with http.get(url, headers={"Host": daemon.host(name)}) as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                return False

        async def out(revision: int) -> bool:
            code, dep = await api.call("GET", f"/v1/deployments/{name}")
            return bool(
                code == 200
                and dep["stable_revision"] == revision
                and dep["status"] == "running"
                and sum(i["ready"] for i in dep["instances"]) == instances
            )

        started = time.monotonic()
        await api.ok("POST", "/v1/deployments", spec)
        await _bounded(answers, "first 200")
        first = time.monotonic() - started
        await _bounded(lambda: out(1), "all ready")
        ready = time.monotonic() - started
        dep = await api.ok("GET", f"/v1/deployments/{name}")
        nodes = len({i["address"] for i in dep["instances"]})
        started = time.monotonic()
        await api.ok("PATCH", f"/v1/deployments/{name}", {"env": {"RELEASE": "2"}})
        await _bounded(lambda: out(2), "rollout")
        rollout = time.monotonic() - started
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name, timeout=WAIT_S)
    return {"first_200_s": first, "all_ready_s": ready, "rollout_s": rollout, "nodes_used": nodes}


async def measure(daemon: Daemon, runs: int, instances: int) -> list[dict[str, float]]:
    async with Api(daemon) as api:
        return [await one_run(daemon, api, instances) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--sizes", default="1,3", help="swarm sizes, comma-separated")
    parser.add_argument("--json", default="var/bench/swarm.json")
    args = parser.parse_args()
    images = build_test_images()
    results: dict[str, list[dict[str, float]]] = {}
    for nodes in (int(s) for s in args.sizes.split(",")):
        with (
            swarm_cluster(nodes, images=(images["v1"],)) as swarm,
            tempfile.TemporaryDirectory() as tmp,
        ):
            daemon = Daemon(Path(tmp))
            daemon.config = {
                "engine": {"backend": "swarm"},
                "docker": {"socket": swarm.manager.url},
            }
            daemon.start()
            try:
                results[f"{nodes} nodes"] = asyncio.run(measure(daemon, args.runs, args.instances))
            finally:
                daemon.stop()
    print(
        f"{'swarm':>8} {'first 200 (s)':>14} {'all ready (s)':>14} {'rollout (s)':>12} {'nodes':>6}"
    )
    medians: dict[str, dict[str, float]] = {}
    for size, runs in results.items():
        medians[size] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = medians[size]
        print(
            f"{size:>8} {m['first_200_s']:>14.2f} {m['all_ready_s']:>14.2f} "
            f"{m['rollout_s']:>12.2f} {m['nodes_used']:>6.0f}"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": results, "medians": medians}, indent=2))
    print(f"median of {args.runs} runs, {args.instances} instances; wrote {out}")


if __name__ == "__main__":
    main()
