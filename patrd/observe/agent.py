"""``patrd agent``: one swarm node's figures for the manager (like node_exporter).

The manager's Docker API says where each task runs but not what it uses:
cgroups are on the task's node. So each node runs a small agent that

* lists its engine's running patrd task containers (patrd/engine/swarm_node.py),
* reads each one's cgroup counters (:class:`~patrd.observe.counters.CgroupReader`,
  Docker's stats endpoint when no cgroup is found), and
* answers ``GET /v1/agent/tasks`` with them (patrd/observe/agent_wire.py),
  to requests bearing the manager's token only (401 otherwise), and
* opens exec sessions in those containers for ``patrctl exec``
  (patrd/observe/agent_exec.py), and lists and removes patrd's volumes on its
  node when the manager removes them (patrd/observe/agent_volumes.py), behind
  the same token, and
* with ``--fence-allow``, keeps ``table inet patrd_agent`` so the published
  ports of those containers answer only the allowed sources (the manager):
  patrd/firewall/node_fence_keeper.py.

It schedules nothing and keeps no state but the cgroup paths it found: Swarm
places tasks; the manager's sampler turns readings into rates; the manager
decides which volumes go. The manager
reads its own node in-process with the same :class:`NodeFigures`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from patrd.engine.swarm_node import NodeDocker, TaskContainer
from patrd.firewall.apply import FirewallError
from patrd.firewall.node_fence import Network, parse_allow
from patrd.firewall.node_fence_keeper import NodeFenceKeeper, TaskPorts
from patrd.kit import log_setup
from patrd.model.errors import EngineError
from patrd.observe.agent_exec import add_exec_routes
from patrd.observe.agent_volumes import add_volume_routes
from patrd.observe.agent_wire import TASKS_PATH, authorized, read_token, report
from patrd.observe.counters import CgroupReader, Counters, counters_from_docker_stats

STATS_CONCURRENCY = 4  # Docker stats calls at once, for containers without a readable cgroup


class NodeFigures:
    """This node's patrd task containers with their cumulative counters."""

    def __init__(self, docker: NodeDocker, reader: CgroupReader) -> None:
        self._docker = docker
        self._reader = reader
        self._lock = asyncio.Lock()  # the reader's caches are not for two threads at once

    async def read(self) -> list[tuple[TaskContainer, Counters]]:
        async with self._lock:
            tasks = await self._docker.tasks()
            ids = [t.container_id for t in tasks]
            readings = await asyncio.to_thread(self._read_all, ids)
            self._reader.forget(ids)
        missing = [cid for cid in ids if readings.get(cid) is None]
        if missing:
            readings.update(await self._stats(missing))
        return [(t, found) for t in tasks if (found := readings.get(t.container_id)) is not None]

    def _read_all(self, ids: Sequence[str]) -> dict[str, Counters | None]:
        return {cid: self._reader.read(cid) for cid in ids}

    async def _stats(self, ids: Sequence[str]) -> dict[str, Counters | None]:
        gate = asyncio.Semaphore(STATS_CONCURRENCY)

        async def one(cid: str) -> tuple[str, Counters | None]:
            async with gate:
                try:
                    stats = await self._docker.stats(cid)
                except EngineError:
                    return cid, None
                return cid, counters_from_docker_stats(stats, time.monotonic())

        return dict(await asyncio.gather(*(one(cid) for cid in ids)))


def agent_app(
    figures: NodeFigures, token: str, node_id: str = "", docker: NodeDocker | None = None
) -> web.Application:
    """The agent's HTTP API, bearer token required: ``GET /v1/agent/tasks``, and with
    ``docker`` the exec and volume routes (patrd/observe/agent_exec.py, agent_volumes.py)."""
    log = structlog.get_logger("patrd.observe.agent")

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not authorized(request.headers.get("Authorization"), token):
            log.warning("agent_refused", peer=request.remote, path=request.path)
            raise web.HTTPUnauthorized(
                text="a valid agent token is required (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": 'Bearer realm="patrd agent"'},
            )
        return await handler(request)

    async def tasks(request: web.Request) -> web.Response:
        try:
            found = await figures.read()
        except EngineError as exc:
            raise web.HTTPServiceUnavailable(text=f"this node's Docker engine: {exc}") from exc
        return web.json_response(
            report(node_id, ((t.task_id, t.container_id, c) for t, c in found))
        )

    app = web.Application(middlewares=[require_token])
    app.router.add_get(TASKS_PATH, tasks, allow_head=False)
    if docker is not None:
        add_exec_routes(app, docker)
        add_volume_routes(app, docker)
    return app


@dataclass(frozen=True)
class AgentOptions:
    host: str
    port: int
    docker: str
    cgroup_root: Path
    fence_allow: tuple[Network, ...] = ()  # empty: the published ports are not fenced
    fence_interval_s: float = 2.0


def agent_main(args: argparse.Namespace) -> int:
    host, sep, port = str(args.listen).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        print(f"patrd agent: --listen must be HOST:PORT, not {args.listen!r}", flush=True)
        return 2
    try:
        token = read_token(args.token_file)
        loose = bool(args.token_file.stat().st_mode & 0o077)
    except (OSError, ValueError) as exc:
        print(f"patrd agent: --token-file: {exc}", flush=True)
        return 2
    try:
        fence_allow = parse_allow(args.fence_allow) if args.fence_allow is not None else ()
    except ValueError as exc:
        print(f"patrd agent: --fence-allow: {exc}", flush=True)
        return 2
    if not args.fence_interval > 0:
        print("patrd agent: --fence-interval must be more than 0", flush=True)
        return 2
    log_setup.configure(args.log_level, args.log_format)
    if loose:
        structlog.get_logger("patrd.observe.agent").warning(
            "token_file_readable_by_others",
            path=str(args.token_file),
            note="the token lets its holder run commands in patrd's containers: chmod 600",
        )
    options = AgentOptions(
        host=host.strip("[]") or "0.0.0.0",
        port=int(port),
        docker=str(args.docker),
        cgroup_root=args.cgroup_root,
        fence_allow=fence_allow,
        fence_interval_s=args.fence_interval,
    )
    try:
        return asyncio.run(serve_agent(options, token))
    except KeyboardInterrupt:
        return 130


async def serve_agent(options: AgentOptions, token: str) -> int:
    log = structlog.get_logger("patrd.observe.agent")
    docker = NodeDocker(options.docker)
    try:
        node_id = await docker.node_id()
    except EngineError as exc:
        await docker.close()
        print(f"patrd agent: Docker at {options.docker}: {exc}", flush=True)
        return 1
    fence = NodeFenceKeeper(
        options.fence_allow, TaskPorts(docker), interval_s=options.fence_interval_s
    )
    try:
        await fence.sync()
    except FirewallError as exc:
        if fence.enabled:  # asked to fence and cannot: say so rather than serve unfenced
            await docker.close()
            print(f"patrd agent: --fence-allow: {exc}", flush=True)
            return 1
    if fence.enabled:
        log.info("fence_loaded", allow=",".join(map(str, options.fence_allow)), ports=fence.ports)
    else:
        log.warning(
            "published_ports_open",
            note="without --fence-allow, the published ports of this node's patrd tasks "
            "answer anyone who reaches the node",
        )
    fence_task = asyncio.create_task(fence.run()) if fence.enabled else None
    figures = NodeFigures(docker, CgroupReader(options.cgroup_root))
    runner = web.AppRunner(agent_app(figures, token, node_id, docker), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        log.info("agent_listening", listen=f"{options.host}:{options.port}", node=node_id[:12])
        print(f"patrd agent: listening on {options.host}:{options.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("agent_stopping")
    finally:
        if fence_task is not None:  # the table stays loaded: the ports stay fenced
            fence_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fence_task
        await runner.cleanup()
        await docker.close()
    return 0
