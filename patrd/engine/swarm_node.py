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

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from patrd.engine.docker_base import translate as _translate
from patrd.engine.docker_exec import DockerExec
from patrd.engine.labels import LABEL_DEPLOYMENT_ID, LABEL_MANAGED

SWARM_TASK_LABEL = "com.docker.swarm.task.id"  # Docker's, on every task's container
SWARM_NODE_LABEL = "com.docker.swarm.node.id"


@dataclass(frozen=True, slots=True)
class TaskContainer:
    """A running patrd task container on this node."""

    task_id: str
    container_id: str
    deployment_id: str
    node_id: str


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
            )
        )
    return found


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
