"""The nodes patrd runs instances on: list them, drain one, activate it again.

``engine.backend = "swarm"``: :class:`SwarmNodes` over the swarm's nodes. A
drain moves instances off a node without dropping requests:

1. the node's tasks are *withheld* (patrd/engine/swarm_backend.py): the next
   listing reports them without an address, so the executor takes them out
   of the proxy pools, as it does for an instance it replaces;
2. wait (bounded) until none of them is in a pool any more and the proxy has
   no request in flight to them;
3. only then the node's availability becomes ``drain``: Swarm stops those
   tasks and starts them on the other nodes, where the executor probes them
   and adds them to the pools as on one node.

``engine.backend = "docker"``: :class:`LocalNodes`, the one node this is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from patrd.engine.protocol import Engine
from patrd.engine.swarm import NodeInfo
from patrd.engine.swarm_backend import SwarmBackend
from patrd.engine.swarm_tasks import SwarmInstance
from patrd.model.errors import Conflict, NotFound
from patrd.model.instances import ContainerState
from patrd.model.views import InstanceView

WAKE_BOUND_S = 10.0  # on top of the drain timeout: the executor's pass that withdraws them
POLL_S = 0.1


class Pools(Protocol):
    """What a drain asks of the controller and the proxy."""

    def wake(self, deployment_id: str | None = None) -> None: ...
    def instances(self, deployment_id: str) -> list[InstanceView]: ...


class Outstanding(Protocol):
    def outstanding(self, host: str, port: int) -> int: ...


def match_node(nodes: list[NodeInfo], wanted: str) -> NodeInfo:
    """The one node ``wanted`` names: its ID, a unique ID prefix, or its hostname."""
    exact = [n for n in nodes if n.node_id == wanted]
    found = exact or [
        n for n in nodes if n.node_id.startswith(wanted) or (n.hostname == wanted and wanted)
    ]
    if not found:
        raise NotFound(f"node {wanted!r} not found")
    if len(found) > 1:
        raise Conflict(f"node {wanted!r} names {len(found)} nodes: use the node ID")
    return found[0]


def still_serving(
    tasks: list[SwarmInstance],
    views: Mapping[str, list[InstanceView]],
    outstanding: Outstanding,
) -> list[str]:
    """Names of withheld tasks still in a pool or with requests in flight."""
    busy = []
    for t in tasks:
        cid = f"{t.service_id}.{t.task_id}"
        pool = views.get(t.instance.deployment_id, [])
        pooled = any(v.ready and v.container_id == cid for v in pool)
        flying = t.node_address is not None and any(
            outstanding.outstanding(t.node_address, port) for port in t.ports.values()
        )
        if pooled or flying:
            busy.append(t.instance.container_name)
    return busy


class SwarmNodes:
    def __init__(
        self, backend: SwarmBackend, pools: Pools, proxy: Outstanding, drain_timeout_s: float
    ) -> None:
        self._backend = backend
        self._pools = pools
        self._proxy = proxy
        self._drain_timeout_s = drain_timeout_s

    async def list(self) -> list[NodeInfo]:
        return await self._backend.nodes()

    async def drain(self, node: str) -> NodeInfo:
        target = match_node(await self._backend.nodes(), node)
        tasks = await self._backend.node_tasks(target.node_id)
        self._backend.withhold(target.node_id)
        try:
            self._pools.wake()
            deadline = time.monotonic() + self._drain_timeout_s + WAKE_BOUND_S
            while time.monotonic() < deadline:
                deployments = {t.instance.deployment_id for t in tasks}
                views = {d: self._pools.instances(d) for d in deployments}
                if not still_serving(tasks, views, self._proxy):
                    break
                await asyncio.sleep(POLL_S)
            # Drained (or the bound passed): Swarm moves the tasks now.
            return await self._backend.set_availability(target.node_id, "drain")
        finally:
            # A drained node's tasks stay withheld by its availability.
            self._backend.release(target.node_id)

    async def activate(self, node: str) -> NodeInfo:
        target = match_node(await self._backend.nodes(), node)
        info = await self._backend.set_availability(target.node_id, "active")
        self._pools.wake()
        return info


class LocalNodes:
    """``engine.backend = "docker"``: this node alone, which cannot be drained."""

    def __init__(self, engine: Engine, info: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        self._engine = engine
        self._info = info  # Docker's /info document

    async def list(self) -> list[NodeInfo]:
        info: Mapping[str, Any] = await self._info()
        running = [
            i for i in await self._engine.list_instances() if i.state is ContainerState.RUNNING
        ]
        return [local_node(info, len(running))]

    async def drain(self, node: str) -> NodeInfo:
        raise Conflict("draining a node needs engine.backend = swarm")

    async def activate(self, node: str) -> NodeInfo:
        raise Conflict("activating a node needs engine.backend = swarm")


def local_node(info: Mapping[str, Any], instances: int) -> NodeInfo:
    """The single node of the docker backend, from Docker's ``/info``."""
    return NodeInfo(
        node_id=str(info.get("ID", "")),
        hostname=str(info.get("Name", "")),
        address="",
        role="standalone",
        state="ready",
        availability="active",
        leader=True,
        cpus=float(info.get("NCPU", 0)),
        memory_bytes=int(info.get("MemTotal", 0)),
        labels={},
        instances=instances,
    )
