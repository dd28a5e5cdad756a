"""Swarm's service and task JSON read as patrd instances: pure, no I/O.

One service per instance slot; the slot's current task says where and how it
runs (patrd/engine/swarm.py has the whole picture).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from patrd.engine.labels import (
    LABEL_DEPLOYMENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE,
    LABEL_REVISION,
    LABEL_TEMPLATE,
)
from patrd.engine.swarm_images import FAILED_TASK_STATES
from patrd.model.instances import ContainerState, Instance

# Task states (Docker Engine API, Task.Status.State) by what patrd makes of them.
STARTING_STATES = {
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
}
_ENDED = {"complete", "shutdown", "remove"}
_FAILED = FAILED_TASK_STATES


@dataclass(frozen=True, slots=True)
class SwarmInstance:
    """An instance slot (a service) with its current task, node and published port."""

    instance: Instance
    service_id: str
    task_id: str
    node_id: str
    node_address: str | None
    port: int | None  # host-mode published port of the first target port
    ports: Mapping[int, int]  # target → published, for every target port
    task_state: str
    desired_state: str
    error: str
    pinned: str = ""  # the node its placement requires (node.id==): its volumes' home

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the proxy dials this instance, once its task runs."""
        if self.node_address is None or self.port is None:
            return None
        return self.node_address, self.port


def current_task(tasks: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The task that stands for the slot now: the newest one meant to run, else the newest."""
    ordered = sorted(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0), reverse=True)
    wanted = [t for t in ordered if t.get("DesiredState") == "running"]
    candidates = wanted or ordered
    return candidates[0] if candidates else None


def task_state(task: Mapping[str, Any] | None) -> tuple[ContainerState, int | None]:
    """A task's state as a ContainerState, with the exit code when it ended."""
    if task is None:
        # Swarm is still scheduling the service's first task. Not CREATED: the
        # planner starts a created container, and Swarm starts tasks itself, so
        # a pass would plan a start that does nothing and loop at once.
        return ContainerState.RESTARTING, None
    status = task.get("Status") or {}
    state = str(status.get("State", ""))
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state == "running":
        return ContainerState.RUNNING, None
    if state in STARTING_STATES:
        return ContainerState.RESTARTING, None  # on its way: see above
    if state in _ENDED:
        return ContainerState.EXITED, int(code) if code is not None else 0
    if state in _FAILED:
        return ContainerState.DEAD, int(code) if code is not None else None
    return ContainerState.DEAD, None


def published_ports(task: Mapping[str, Any] | None) -> dict[int, int]:
    """Target → published port of a task's host-mode ports (``Status.PortStatus``)."""
    if task is None:
        return {}
    port_status = (task.get("Status") or {}).get("PortStatus") or {}
    return {
        int(p["TargetPort"]): int(p["PublishedPort"])
        for p in port_status.get("Ports") or []
        if p.get("PublishMode") == "host" and p.get("PublishedPort")
    }


def pinned_node(service: Mapping[str, Any]) -> str:
    """The node ID a service's placement requires (``node.id==ID``), or ""."""
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    for constraint in (template.get("Placement") or {}).get("Constraints") or []:
        key, op, value = str(constraint).partition("==")
        if op and key.strip() == "node.id":
            return value.strip()
    return ""


def swarm_instance_from(
    service: Mapping[str, Any], task: Mapping[str, Any] | None, addresses: Mapping[str, str]
) -> SwarmInstance | None:
    spec = service.get("Spec") or {}
    labels = spec.get("Labels") or {}
    try:
        revision = int(labels[LABEL_REVISION])
        slot = int(labels[LABEL_INSTANCE])
        deployment_id = str(labels[LABEL_DEPLOYMENT_ID])
        deployment = str(labels[LABEL_DEPLOYMENT])
    except (KeyError, ValueError):
        return None
    state, exit_code = task_state(task)
    node_id = str((task or {}).get("NodeID") or "")
    running = state is ContainerState.RUNNING
    node_addr = addresses.get(node_id) if running else None
    ports = published_ports(task) if running else {}
    targets = [p.get("TargetPort") for p in (spec.get("EndpointSpec") or {}).get("Ports") or []]
    first = ports.get(int(targets[0])) if targets and targets[0] else None
    status = (task or {}).get("Status") or {}
    return SwarmInstance(
        instance=Instance(
            container_id=str(service["ID"]),
            container_name=str(spec.get("Name", "")),
            deployment_id=deployment_id,
            deployment=deployment,
            revision=revision,
            slot=slot,
            state=state,
            ip=node_addr or None,
            exit_code=exit_code,
            template=str(labels.get(LABEL_TEMPLATE, "")),
        ),
        service_id=str(service["ID"]),
        task_id=str((task or {}).get("ID") or ""),
        node_id=node_id,
        node_address=node_addr or None,
        port=first,
        ports=ports,
        task_state=str(status.get("State", "")),
        desired_state=str((task or {}).get("DesiredState") or ""),
        error=str(status.get("Err") or ""),
        pinned=pinned_node(service),
    )
