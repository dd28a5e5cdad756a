"""Crash-and-restart drills on the real Docker engine.

* ``kill -9`` patrd at random points during create / rollout / delete, then
  start it again: every deployment converges, no duplicate or orphan
  containers, no acknowledged change lost. The default run does 10
  iterations with a fixed seed (``PATRD_DRILL_SEED`` replays another);
  ``-m slow`` runs 40 with a fresh seed, printed for replay.
* dockerd stops and starts under a running deployment (with and without
  ``live-restore``): traffic comes back without restarting patrd, and the
  deployment is not left errored. This one uses a private engine in a test
  network namespace (tests/support/private_docker.py), so stopping it never
  disturbs the machine's engine or other tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import Api, Daemon, containers_of, networks_of
from tests.support.private_docker import PrivateDocker, private_docker
from tests.support.waits import until

pytestmark = pytest.mark.docker

IMAGE = {"image": "patrd-test/web", "tag": "v1", "ports": {"80": "http"}}


# --- kill -9 drill ---------------------------------------------------------------


# The first iterations cover every operation; later ones are drawn at random.
OPS = ("create", "create", "update", "delete", "create", "update", "delete", "create", "update")
MAX_LIVE = 3


@dataclass
class Known:
    """What the drill knows about one deployment from acknowledged API answers."""

    revision: int
    scale: int
    deleted: bool = False
    # An operation was in flight when patrd died: it may or may not have committed.
    uncertain: set[str] = field(default_factory=set)


@dataclass
class DrillLog:
    iterations: list[dict[str, Any]] = field(default_factory=list)


async def _once(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One attempt, no retries: the daemon may be killed under it."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as s,
        s.request(
            method,
            f"http://patrd{path}",
            data=None if body is None else json.dumps(body),
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        text = await r.text()
        return r.status, json.loads(text) if text else None


def _docker_state(names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Containers by deployment name (label), for every name the drill ever used."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            "label=patrd.deployment",
            "--format",
            "{{json .}}",
            "--no-trunc",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_name: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for line in out.splitlines():
        row = json.loads(line)
        labels = dict(kv.split("=", 1) for kv in row["Labels"].split(",") if "=" in kv)
        name = labels.get("patrd.deployment")
        if name in by_name:
            by_name[name].append(
                {
                    "id": row["ID"],
                    "state": row["State"],
                    "revision": int(labels["patrd.revision"]),
                    "slot": int(labels["patrd.instance"]),
                }
            )
    return by_name


async def _converged(
    api: Api, daemon: Daemon, known: dict[str, Known], timeout: float = 90
) -> dict[str, Any]:
    """Wait until desired == actual for every deployment; return the final picture."""
    problems: list[str] = []

    async def converged() -> dict[str, Any] | None:
        problems.clear()
        _, listed = await api.call("GET", "/v1/deployments")
        live = {d["name"]: d for d in listed["deployments"]}
        containers = _docker_state(list(known))
        for name, k in known.items():
            d = live.get(name)
            if k.deleted and "delete" not in k.uncertain:
                if d is not None:
                    problems.append(f"{name}: deleted but still listed ({d['status']})")
                continue
            if d is None:
                if "create" in k.uncertain or "delete" in k.uncertain:
                    k.deleted = True  # the create never committed / the delete did
                    continue
                problems.append(f"{name}: acknowledged but missing (lost row)")
                continue
            if d["status"] == "deleting":
                problems.append(f"{name}: still deleting")
                continue
            want_rev = k.revision + (1 if "update" in k.uncertain else 0)
            if d["revision"] not in (k.revision, want_rev):
                problems.append(f"{name}: revision {d['revision']}, expected {k.revision}")
            if d["status"] != "running":
                problems.append(f"{name}: {d['status']} {d['status_reason']}")
            mine = containers[name]
            slots = Counter(c["slot"] for c in mine)
            if sorted(slots) != list(range(k.scale)) or any(n > 1 for n in slots.values()):
                problems.append(f"{name}: slots {dict(slots)} for scale {k.scale}")
            if any(c["revision"] != d["revision"] or c["state"] != "running" for c in mine):
                problems.append(f"{name}: containers {mine} vs revision {d['revision']}")
        for name in known:
            if name not in live and containers[name]:
                problems.append(f"{name}: orphan containers {containers[name]}")
            if name not in live and networks_of(name):
                problems.append(f"{name}: orphan network")
        if not problems:
            return {"live": sorted(live), "containers": sum(len(c) for c in containers.values())}
        return None

    picture: dict[str, Any] = await until(
        converged, timeout, "convergence", daemon, interval=0.25, detail=lambda: problems
    )
    return picture


async def _settle_uncertain(api: Api, known: dict[str, Known]) -> None:
    """After convergence, what the daemon holds is the truth for in-flight operations."""
    for name, k in known.items():
        code, d = await api.call("GET", f"/v1/deployments/{name}")
        if code == 404:
            k.deleted = True
        elif code == 200:
            k.revision = d["revision"]
        k.uncertain.clear()


async def run_kill9_drill(tmp_path: Path, new_name: Any, iterations: int, seed: int) -> DrillLog:
    rng = random.Random(seed)
    # Spread the kill delay across the whole life of an operation: before the
    # request is read, mid-transaction, mid-pull/create, mid-rollout, after.
    delays = [0.0, 0.3, 1.0, 0.1, 0.6, 0.02, 1.5, 2.5]
    daemon = Daemon(tmp_path)
    daemon.start()
    known: dict[str, Known] = {}
    log = DrillLog()
    try:
        async with Api(daemon) as api:
            for i in range(iterations):
                live = [n for n, k in known.items() if not k.deleted]
                op = OPS[i] if i < len(OPS) else rng.choice(("create", "update", "delete"))
                if not live:
                    op = "create"
                elif len(live) >= MAX_LIVE and op == "create":
                    op = "delete"  # every deployment is a Docker network: stay frugal
                if op == "create":
                    name, scale = new_name("drill"), rng.choice([1, 2])
                    body: Any = {"name": name, **IMAGE, "scale": {"min": scale, "max": scale}}
                    request = ("POST", "/v1/deployments", body)
                    known[name] = Known(revision=1, scale=scale, uncertain={"create"})
                elif op == "update":
                    name = rng.choice(live)
                    request = ("PATCH", f"/v1/deployments/{name}", {"env": {"ITER": str(i)}})
                    known[name].uncertain.add("update")
                else:
                    name = rng.choice(live)
                    request = ("DELETE", f"/v1/deployments/{name}?confirm={name}", None)
                    known[name].uncertain.add("delete")
                base = delays[i % len(delays)]
                delay = base + rng.uniform(0, 0.05) if base else 0.0
                task = asyncio.create_task(_once(daemon, *request))
                await asyncio.sleep(delay)
                daemon.kill9()
                acked = False
                if task.done() and task.exception() is None:
                    status, _ = task.result()
                    acked = 200 <= status < 300
                else:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                if acked:
                    k = known[name]
                    k.uncertain.discard(op)
                    if op == "update":
                        k.revision += 1
                    elif op == "delete":
                        k.deleted = True
                started = time.monotonic()
                daemon.start()
                picture = await _converged(api, daemon, known)
                await _settle_uncertain(api, known)
                log.iterations.append(
                    {
                        "op": op,
                        "delay_s": round(delay, 3),
                        "acked": acked,
                        "converged_s": round(time.monotonic() - started, 2),
                        **picture,
                    }
                )
            # Last word: proxy traffic reaches every live deployment.
            for name in (n for n, k in known.items() if not k.deleted):
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(
                        f"http://127.0.0.1:{daemon.proxy_port}/",
                        headers={"Host": daemon.host(name)},
                    ) as r,
                ):
                    assert r.status == 200, (name, r.status)
            # Deleted ones left nothing behind.
            for name in (n for n, k in known.items() if k.deleted):
                assert containers_of(name) == [] and networks_of(name) == []
    finally:
        daemon.stop()
    print(f"kill -9 drill (seed {seed}):", json.dumps(log.iterations))
    return log


async def test_kill9_drill(tmp_path: Path, test_images: dict[str, str], new_name) -> None:
    seed = int(os.environ.get("PATRD_DRILL_SEED", "9"))
    log = await run_kill9_drill(tmp_path, new_name, iterations=10, seed=seed)
    assert len(log.iterations) == 10
    assert {it["op"] for it in log.iterations} == {"create", "update", "delete"}


@pytest.mark.slow
async def test_kill9_drill_long(tmp_path: Path, test_images: dict[str, str], new_name) -> None:
    seed = int(os.environ.get("PATRD_DRILL_SEED", str(int(time.time()))))
    log = await run_kill9_drill(tmp_path, new_name, iterations=40, seed=seed)
    assert {it["op"] for it in log.iterations} == {"create", "update", "delete"}


# --- dockerd restart drill ----------------------------------------------------------


async def _curl(
    engine: PrivateDocker, daemon: Daemon, name: str, timeout: float = 2.0
) -> tuple[int, str]:
    return await asyncio.to_thread(
        engine.curl, f"http://127.0.0.1:{daemon.proxy_port}/", daemon.host(name), timeout
    )


async def _wait_200(engine: PrivateDocker, daemon: Daemon, name: str, timeout: float) -> float:
    started = time.monotonic()

    async def served() -> bool:
        status, body = await _curl(engine, daemon, name)
        return status == 200 and "hello from v1" in body

    await until(served, timeout, f"a 200 from {name}", daemon)
    return time.monotonic() - started


def _started_at(engine: PrivateDocker, name: str) -> dict[str, str]:
    ids = engine.docker("ps", "-aq", "--no-trunc", "--filter", f"label=patrd.deployment={name}")
    out = {}
    for cid in ids.stdout.split():
        info = json.loads(engine.docker("inspect", cid).stdout)[0]
        out[cid] = info["State"]["StartedAt"]
    return out


@pytest.mark.parametrize("live_restore", [False, True], ids=["plain", "live-restore"])
async def test_dockerd_restart_traffic_resumes_without_restarting_patrd(
    tmp_path: Path, test_images: dict[str, str], live_restore: bool
) -> None:
    with private_docker(live_restore=live_restore, images=(test_images["v1"],)) as engine:
        daemon = Daemon(
            tmp_path,
            command_prefix=engine.nsenter,
            config={"docker": {"socket": engine.url}},
        )
        daemon.start()
        try:
            async with Api(daemon) as api:
                name = "web"
                await api.ok(
                    "POST",
                    "/v1/deployments",
                    {"name": name, **IMAGE, "scale": {"min": 2, "max": 2}},
                )
                await api.wait_status(name, "running")
                await _wait_200(engine, daemon, name, 30)
                before = _started_at(engine, name)
                assert len(before) == 2
                assert daemon.proc is not None
                pid = daemon.proc.pid

                stop_s = await asyncio.to_thread(engine.stop)
                # patrd keeps answering its API while the engine is gone.
                assert (await api.call("GET", "/v1/health"))[0] == 200
                code, listed = await api.call("GET", "/v1/deployments")
                assert code == 200 and [d["name"] for d in listed["deployments"]] == [name]
                # The proxy answers (an error once its 5 s upstream connect timeout
                # gives up on a container Docker took down), it does not hang.
                during, _ = await _curl(engine, daemon, name, timeout=10)
                if live_restore:
                    assert during == 200, "live-restore: containers keep serving"
                else:
                    assert during in (502, 503), during

                await asyncio.sleep(2)  # an outage, not a blip
                start_s = await asyncio.to_thread(engine.start)
                back_s = await _wait_200(engine, daemon, name, 45)
                shown = await api.wait_status(name, "running", timeout=45)
                assert daemon.proc.poll() is None and daemon.proc.pid == pid, "patrd not restarted"

                after = _started_at(engine, name)
                events = (await api.ok("GET", f"/v1/deployments/{name}/events"))["events"]
                # The one exception to "same containers": Docker kept stale state of
                # a container (a containerd task, a network endpoint) and refused to
                # start it again; patrd then replaces that container and says so in
                # an engine_stale event (docs/design.md, "Starts that fail because
                # of the engine"). Every other container is the one from before.
                replaced = [e for e in events if e["kind"] == "engine_stale"]
                recreated = set(after) - set(before)
                assert len(after) == 2 and len(recreated) <= len(replaced), (after, events)
                kept = {c: t for c, t in after.items() if c in before}
                if live_restore:
                    assert kept == before, "live-restore: nothing was restarted"
                else:
                    assert all(kept[c] != before[c] for c in kept), "patrd started them again"
                assert len(kept) + len(recreated) == 2
                assert all(i["ready"] for i in shown["instances"])
                # Ten more requests: both instances serve.
                for _ in range(10):
                    assert (await _curl(engine, daemon, name))[0] == 200
                assert not any("errored" in e["message"] for e in events), events
                assert not any("crash loop" in e["message"] for e in events), events
                print(
                    f"dockerd restart (live_restore={live_restore}): stop {stop_s:.1f}s, "
                    f"start {start_s:.1f}s, traffic back {back_s:.1f}s after dockerd answered"
                )
        finally:
            daemon.stop()
