"""Rollouts under load (see scripts/bench/rollout)."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.daemon import Api, Daemon, force_cleanup
from tests.support.images import build_test_images
from tests.support.load import Load

PROBE = {"port": 80, "path": "/cgi-bin/health", "period_s": 0.5, "failure_threshold": 20}


async def rolled_out(api: Api, name: str, revision: int, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        dep = await api.ok("GET", f"/v1/deployments/{name}")
        if dep["stable_revision"] == revision and dep["status"] == "running":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"revision {revision} not rolled out within {within_s}s")


async def run(daemon: Daemon, rounds: int, concurrency: int) -> list[dict[str, Any]]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    rows = []
    try:
        async with Api(daemon) as api:
            await api.ok(
                "POST",
                "/v1/deployments",
                {
                    "name": name,
                    "image": "patrd-test/web",
                    "tag": "v1",
                    "ports": {"80": "http"},
                    "scale": {"min": 3, "max": 3},
                    "startup_probe": PROBE,
                },
            )
            await rolled_out(api, name, 1)
            for revision in range(2, rounds + 2):
                async with Load(
                    daemon.proxy_port, daemon.host(name), "/", concurrency=concurrency
                ) as load:
                    await asyncio.sleep(0.5)
                    start = time.monotonic()
                    await api.ok(
                        "PATCH", f"/v1/deployments/{name}", {"env": {"ROUND": str(revision)}}
                    )
                    await rolled_out(api, name, revision)
                    took = time.monotonic() - start
                    await asyncio.sleep(0.5)
                r = load.result
                rows.append(
                    {
                        "revision": revision,
                        "requests": r.total,
                        "non_2xx": sum(n for s, n in r.statuses.items() if not 200 <= s < 300),
                        "errors": len(r.errors),
                        "p50_ms": r.percentile(0.50),
                        "p99_ms": r.percentile(0.99),
                        "rollout_s": took,
                    }
                )
    finally:
        daemon.stop()
        force_cleanup([name])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", default="var/bench/rollout.json")
    args = parser.parse_args()
    build_test_images()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp))
        daemon.start()
        rows = asyncio.run(run(daemon, args.rounds, args.concurrency))
    header = f"{'rev':>4} {'requests':>9} {'non-2xx':>8} {'errors':>7} {'p50 ms':>7} "
    print(header + f"{'p99 ms':>7} {'rollout s':>10}")
    for r in rows:
        print(
            f"{r['revision']:>4} {r['requests']:>9} {r['non_2xx']:>8} {r['errors']:>7} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['rollout_s']:>10.2f}"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"concurrency": args.concurrency, "rounds": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
