"""Create → first proxied 200 latency (see scripts/bench/create)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from tests.support.daemon import Api, Daemon, force_cleanup
from tests.support.images import build_test_images


async def measure(daemon: Daemon, runs: int) -> list[dict[str, float]]:
    results = []
    names: list[str] = []
    try:
        async with Api(daemon) as api, aiohttp.ClientSession() as http:
            for _ in range(runs):
                name = f"bench-{uuid.uuid4().hex[:6]}"
                names.append(name)
                start = time.perf_counter()
                await api.ok(
                    "POST",
                    "/v1/deployments",
                    {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
                )
                accepted = time.perf_counter()
                deadline = start + 60
                while time.perf_counter() < deadline:
                    async with http.get(
                        f"http://127.0.0.1:{daemon.proxy_port}/",
                        headers={"Host": daemon.host(name)},
                    ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.005)
                first_200 = time.perf_counter()
                results.append(
                    {
                        "api_ms": (accepted - start) * 1000,
                        "first_200_ms": (first_200 - start) * 1000,
                    }
                )
                await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
                await api.wait_gone(name)
    finally:
        daemon.stop()
        force_cleanup(names)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default="var/bench/create.json")
    args = parser.parse_args()
    build_test_images()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp))
        daemon.start()
        results = asyncio.run(measure(daemon, args.runs))
    print(f"{'run':>4} {'POST (ms)':>10} {'first 200 (ms)':>15}")
    for i, r in enumerate(results, 1):
        print(f"{i:>4} {r['api_ms']:>10.1f} {r['first_200_ms']:>15.1f}")
    median = statistics.median(r["first_200_ms"] for r in results)
    print(f"median create → first proxied 200: {median:.1f} ms over {len(results)} runs")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": results, "median_first_200_ms": median}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
