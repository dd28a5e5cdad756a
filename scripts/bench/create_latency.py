"""Create → first proxied 200 latency (see scripts/bench/create).

Three things side by side, interleaved run by run:

* ``bare``: ``docker run -d`` of the same image on a network made beforehand,
  then GET its address until 200: what Docker and the app take anyway;
* ``patrd``: ``POST /v1/deployments`` → the first 200 through patrd's proxy,
  its network made by patrd (the image is local: nothing is pulled);
* ``patrd warm``: the same with the deployment's network already there, so
  that ``patrd warm - bare`` is the daemon's own share (the API, the store,
  the reconcile pass, the readiness probe, the routing table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import aiohttp

from tests.support.daemon import Api, Daemon, force_cleanup
from tests.support.images import build_test_images

IMAGE = "patrd-test/web:v1"


def _docker(*args: str, check: bool = True) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=120
    ).stdout.strip()


async def _until_200(http: aiohttp.ClientSession, url: str, host: str | None = None) -> None:
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        try:
            async with http.get(url, headers={"Host": host} if host else None) as resp:
                await resp.read()
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no 200 from {url} within 60 s")


async def bare(http: aiohttp.ClientSession) -> float:
    """docker run → 200 on the container's address; network made beforehand, not timed."""
    net = f"bench-bare-{uuid.uuid4().hex[:6]}"
    _docker("network", "create", "--label", "patrd-bench=1", net)
    cid = ""
    try:
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "docker", "run", "-d", "--network", net, IMAGE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        cid = out.decode().strip()
        ip = _docker(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid
        )
        await _until_200(http, f"http://{ip}:80/")
        return (time.perf_counter() - start) * 1000
    finally:
        if cid:
            _docker("rm", "-f", cid, check=False)
        _docker("network", "rm", net, check=False)


async def via_patrd(
    api: Api, http: aiohttp.ClientSession, daemon: Daemon, name: str, *, warm: bool
) -> dict[str, float]:
    if warm:  # the network patrd would make, made beforehand (it adopts it by name)
        _docker("network", "create", "--label", "patrd-bench=1", f"patrd-{name}")
    wall = time.time()
    start = time.perf_counter()
    await api.ok(
        "POST",
        "/v1/deployments",
        {"name": name, "image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}},
    )
    accepted = time.perf_counter()
    await _until_200(http, f"http://127.0.0.1:{daemon.proxy_port}/", daemon.host(name))
    first_200 = time.perf_counter()
    steps = _daemon_steps(daemon.log_path, name, wall, wall + first_200 - start)
    await api.ok("DELETE", f"/v1/deployments/{name}?confirm={name}")
    await api.wait_gone(name)
    return {
        "api_ms": (accepted - start) * 1000,
        "first_200_ms": (first_200 - start) * 1000,
        **steps,
    }


def _stamp(line: str) -> float:
    text = line.split(" ", 1)[0].removeprefix("timestamp=").replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _daemon_steps(log: Path, name: str, posted: float, first_200: float) -> dict[str, float]:
    """patrd's own steps from its log (Docker's create/start time left out).

    ``before_docker_ms``: POST → the container create is asked of Docker (API,
    store, wake, the pass, image and network checks); ``after_start_ms``:
    Docker's ``start`` event → the first 200 through the proxy (the app's own
    start, the probe, the route, the proxy). Their sum bounds patrd's share
    from above: it also holds the app's start and the event's delivery.
    """
    created = started = None
    for line in log.read_text(errors="replace").splitlines():
        if created is None and "event=create " in line and f"container=patrd-{name}-" in line:
            created = _stamp(line)
        elif created is not None and "action=start" in line and "docker_event" in line:
            started = _stamp(line)
            break
    if created is None or started is None:
        return {}
    return {
        "before_docker_ms": (created - posted) * 1000,
        "after_start_ms": (first_200 - started) * 1000,
    }


async def measure(daemon: Daemon, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        "bare": [],
        "patrd": [],
        "patrd warm": [],
        "api": [],
        "before_docker_ms": [],
        "after_start_ms": [],
    }
    names: list[str] = []
    try:
        async with Api(daemon) as api, aiohttp.ClientSession() as http:
            for _ in range(runs):  # bounded
                results["bare"].append(await bare(http))
                for warm in (False, True):
                    name = f"bench-{uuid.uuid4().hex[:6]}"
                    names.append(name)
                    r = await via_patrd(api, http, daemon, name, warm=warm)
                    results["patrd warm" if warm else "patrd"].append(r["first_200_ms"])
                    results["api"].append(r["api_ms"])
                    if warm and "after_start_ms" in r:
                        results["before_docker_ms"].append(r["before_docker_ms"])
                        results["after_start_ms"].append(r["after_start_ms"])
    finally:
        daemon.stop()
        force_cleanup(names)
        for net in _docker("network", "ls", "-q", "--filter", "label=patrd-bench=1").split():
            _docker("network", "rm", net, check=False)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default="var/bench/create.json")
    parser.add_argument("--log", metavar="FILE", help="keep the daemon's log here (its timeline)")
    args = parser.parse_args()
    build_test_images()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp))
        daemon.start()
        results = asyncio.run(measure(daemon, args.runs))
        if args.log:
            shutil.copyfile(daemon.log_path, args.log)
    print(f"{'run':>4} {'bare (ms)':>10} {'patrd (ms)':>11} {'patrd warm (ms)':>16}")
    for i in range(args.runs):
        print(
            f"{i + 1:>4} {results['bare'][i]:>10.1f} {results['patrd'][i]:>11.1f} "
            f"{results['patrd warm'][i]:>16.1f}"
        )
    medians = {k: statistics.median(v) for k, v in results.items() if v}
    share = medians["patrd warm"] - medians["bare"]
    print(
        f"median create → first 200: bare docker run {medians['bare']:.1f} ms, "
        f"patrd {medians['patrd']:.1f} ms, patrd with its network there "
        f"{medians['patrd warm']:.1f} ms; patrd's own share {share:.1f} ms "
        f"(goal <= 100: {'ok' if share <= 100 else 'MISSED'}); POST {medians['api']:.1f} ms"
    )
    if "after_start_ms" in medians:
        own = medians["before_docker_ms"] + medians["after_start_ms"]
        print(
            f"from patrd's log (warm): POST → Docker create asked {medians['before_docker_ms']:.1f}"
            f" ms, Docker start event → first 200 {medians['after_start_ms']:.1f} ms; "
            f"patrd's own steps {own:.1f} ms (goal <= 100: {'ok' if own <= 100 else 'MISSED'})"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"runs": results, "medians": medians, "patrd_share_ms": share}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
