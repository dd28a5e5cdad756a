"""One swarm node's own engine, as its agent (``patrd agent``) sees it.

The manager's Docker API knows a task's node and state, never the cgroup
figures of its container: those are on the node. The agent asks its node's
engine for the patrd task containers running there (:meth:`NodeDocker.tasks`)
and reads their cgroups (patrd/observe/agent.py); Docker's stats endpoint is
the fallback, as on one node; exec sessions in a task container are opened
here too (patrd/observe/agent_exec.py). No owner filter: the agent serves whichever
patrd installs manage the swarm, and the manager keeps the tasks it knows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiodocker

from patrd.engine.docker_base import translate as _translate
from patrd.engine.docker_exec import DockerExec
from patrd.engine.labels import (
    LABEL_DEPLOYMENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_VOLUME,
)
from patrd.model.errors import Conflict, EngineError
from patrd.model.instances import VolumeInfo

VOLUME_IN_USE_WAIT_S = 20.0  # a removed task's container goes a moment after its service

SWARM_TASK_LABEL = "com.docker.swarm.task.id"  # Docker's, on every task's container
SWARM_NODE_LABEL = "com.docker.swarm.node.id"


@dataclass(frozen=True, slots=True)
class TaskContainer:
    """A running patrd task container on this node."""

    task_id: str
    container_id: str
    deployment_id: str
    node_id: str
    ports: tuple[int, ...] = ()  # host-mode published TCP ports on this node (sorted)


def task_containers(summaries: Iterable[Mapping[str, Any]]) -> list[TaskContainer]:
    """patrd's running Swarm task containers among a container list (``GET /containers/json``)."""
    found = []
    for summary in summaries:
        labels = summary.get("Labels") or {}
        task = labels.get(SWARM_TASK_LABEL)
        if not task or LABEL_MANAGED not in labels or summary.get("State") != "running":
            continue
        found.append(
            TaskContainer(
                task_id=str(task),
                container_id=str(summary.get("Id", "")),
                deployment_id=str(labels.get(LABEL_DEPLOYMENT_ID, "")),
                node_id=str(labels.get(SWARM_NODE_LABEL, "")),
                ports=published_tcp_ports(summary.get("Ports") or ()),
            )
        )
    return found


def published_tcp_ports(ports: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    """The host ports of a container summary's ``Ports`` (TCP, published ones only)."""
    found: set[int] = set()
    for port in ports:
        public = port.get("PublicPort")
        if port.get("Type", "tcp") == "tcp" and isinstance(public, int) and 0 < public < 65536:
            found.add(public)
    return tuple(sorted(found))


def owned_volumes(items: Iterable[Mapping[str, Any]], owner: str) -> list[VolumeInfo]:
    """The deployment volumes of ``owner`` among a volume list (``GET /volumes``)."""
    found = []
    for item in items:
        labels = item.get("Labels") or {}
        if labels.get(LABEL_OWNER) != owner or LABEL_MANAGED not in labels:
            continue
        try:
            slot = int(labels[LABEL_INSTANCE])
        except (KeyError, ValueError):
            continue
        found.append(
            VolumeInfo(
                name=str(item["Name"]),
                deployment=str(labels.get(LABEL_DEPLOYMENT, "")),
                volume=str(labels.get(LABEL_VOLUME, "")),
                slot=slot,
                mountpoint=str(item.get("Mountpoint", "")),
            )
        )
    return sorted(found, key=lambda v: (v.deployment, v.volume, v.slot))


class NodeDocker(DockerExec):
    """This node's Docker engine: its patrd task containers; their stats and exec
    sessions are ``DockerExec``'s (patrd/engine/docker_exec.py)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, owner="")  # creates nothing, so no owner of its own

    async def node_id(self) -> str:
        """This engine's swarm node ID ("" when it is not in a swarm); answers = reachable."""
        async with _translate("info"):
            info = await self.docker.system.info()
        return str((info.get("Swarm") or {}).get("NodeID") or "")

    async def tasks(self) -> list[TaskContainer]:
        filters = json.dumps({"label": [LABEL_MANAGED, SWARM_TASK_LABEL], "status": ["running"]})
        async with _translate("list task containers"):
            containers = await self.docker.containers.list(filters=filters)
        return task_containers(c._container for c in containers)

    async def owned_volumes(self, owner: str, deployment: str = "") -> list[VolumeInfo]:
        """This node's volumes of ``owner`` (of one deployment, if given)."""
        labels = [f"{LABEL_OWNER}={owner}"]
        if deployment:
            labels.append(f"{LABEL_DEPLOYMENT}={deployment}")
        filters = json.dumps({"label": labels})
        async with _translate("list volumes"):
            data = await self.docker._query_json("volumes", params={"filters": filters})
        return owned_volumes(data.get("Volumes") or [], owner)

    async def remove_owned_volume(
        self, name: str, owner: str, wait_s: float = VOLUME_IN_USE_WAIT_S
    ) -> bool:
        """Remove ``owner``'s volume ``name``: True if removed, False if absent.

        ``Conflict`` when the volume is not ``owner``'s (never someone else's),
        or still in use after ``wait_s`` (the stopped task's container is
        removed by the node's Swarm executor a moment after the service).
        """
        try:
            async with _translate(f"inspect volume {name}"):
                info = await self.docker._query_json(f"volumes/{name}")
        except EngineError as exc:
            if _status(exc) == 404:
                return False
            raise
        if not owned_volumes([info], owner):
            raise Conflict(f"volume {name} is not a patrd volume of this owner; left alone")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                async with _translate(f"remove volume {name}"):
                    await self.docker._query_json(f"volumes/{name}", method="DELETE")
                return True
            except EngineError as exc:
                if _status(exc) == 404:
                    return False
                if _status(exc) != 409:
                    raise
                if time.monotonic() > deadline:
                    raise Conflict(f"volume {name} is still in use after {wait_s:g} s") from exc
            await asyncio.sleep(0.5)


def _status(exc: EngineError) -> int | None:
    cause = exc.__cause__
    return cause.status if isinstance(cause, aiodocker.DockerError) else None
