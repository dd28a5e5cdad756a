"""The Swarm engine adapter (groundwork): instances as Docker Swarm services.

One *service per instance slot* (replicas 1): each instance stays
individually addressable, drainable and replaceable, so patrd's proxy keeps
per-instance health and least-outstanding balancing exactly as on one node.
The service publishes its target port(s) in ``mode=host`` with no published
port: the engine of the node running the task picks one, and the task's
``Status.PortStatus`` tells it. An instance is therefore reached at
``node_address:published_port`` from patrd on the manager — no overlay
membership needed (docs/design.md, "Swarm groundwork", has the measurements).

Labels are DockerEngine's (patrd/engine/docker.py), on the service *and* on the
task's container. The service ID plays the role of the container ID: it is
stable while Swarm moves the task between nodes.

The controller does not use it directly: ``engine.backend = "swarm"`` wraps
it in :class:`~patrd.engine.swarm_backend.SwarmBackend` (the ``Engine``).
``SwarmEngine`` covers what Swarm services can do of the ``Engine``
protocol (ping, instances, networks, images present on the manager, remove,
restart) plus the node view (:meth:`SwarmEngine.nodes`) and drains
(:meth:`SwarmEngine.set_availability`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import aiodocker
import aiohttp
import structlog

from patrd.engine.docker_base import DockerClient
from patrd.engine.docker_base import translate as _translate
from patrd.engine.hardening import Hardening
from patrd.engine.labels import (
    LABEL_DEPLOYMENT_ID,
    LABEL_MANAGED,
    LABEL_OWNER,
    deployment_labels,
    instance_labels,
    named_volume_labels,
)
from patrd.engine.swarm_configs import ensure_configs, remove_unused
from patrd.engine.swarm_images import recent_failure, registry_auth_header
from patrd.engine.swarm_tasks import (
    STARTING_STATES,
    SwarmInstance,
    current_task,
    swarm_instance_from,
)
from patrd.model.errors import EngineError, ImageNotFound
from patrd.model.instances import (
    ContainerState,
    ImageResult,
    Instance,
    InstanceSpec,
    NetworkInfo,
    RegistryAuth,
)


class Availability(StrEnum):
    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One swarm node as ``GET /v1/nodes`` will show it."""

    node_id: str
    hostname: str
    address: str
    role: str  # manager | worker
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    leader: bool
    cpus: float
    memory_bytes: int
    labels: Mapping[str, str]
    instances: int  # patrd tasks running (or starting) on it
    agent: str | None = None  # swarm: local, ok, away or unknown (observe/agent_client.py)


class SwarmEngine(DockerClient):
    """Services, tasks and nodes over the manager's Docker API."""

    def __init__(
        self, url: str, owner: str, hardening: Hardening | None = None, restart_delay_s: float = 2
    ) -> None:
        super().__init__(url)
        self._owner = owner
        self._hardening = hardening if hardening is not None else Hardening()
        self._restart_delay_s = restart_delay_s
        # A config made for a service must not be collected before the service exists.
        self._configs = asyncio.Lock()
        self._log = structlog.get_logger("patrd.swarm")

    async def ping(self) -> str:
        """Version, and a refusal unless this engine is a swarm manager."""
        async with _translate("ping"):
            info = await self.docker.system.info()
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise EngineError(
                "this Docker engine is not a swarm manager "
                "(docker swarm init, or join the swarm as a manager)"
            )
        return f"{info.get('ServerVersion', '?')} (swarm, {swarm.get('Nodes', '?')} nodes)"

    # --- nodes -----------------------------------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        async with _translate("list nodes"):
            raw = await self.docker.nodes.list()
        counts = Counter(s.node_id for s in await self.list_tasks() if s.desired_state == "running")
        return sorted((node_info(n, counts) for n in raw), key=lambda n: (n.role, n.hostname))

    async def set_availability(self, node: str, availability: Availability | str) -> NodeInfo:
        """Drain, pause or activate a node (by ID, ID prefix or hostname)."""
        wanted = Availability(availability)
        node_id = await self._node_id(node)
        async with _translate(f"update node {node}"):
            current = await self.docker.nodes.inspect(node_id=node_id)
            spec = dict(current["Spec"])
            spec["Availability"] = wanted.value
            await self.docker.nodes.update(
                node_id=node_id, version=current["Version"]["Index"], spec=spec
            )
        self._log.info("node availability", node=node_id[:12], availability=wanted.value)
        return next(n for n in await self.nodes() if n.node_id == node_id)

    async def _node_id(self, node: str) -> str:
        async with _translate("list nodes"):
            raw = await self.docker.nodes.list()
        matches = [
            n["ID"]
            for n in raw
            if n["ID"] == node
            or n["ID"].startswith(node)
            or (n.get("Description") or {}).get("Hostname") == node
        ]
        if len(matches) != 1:
            found = "no node" if not matches else f"{len(matches)} nodes"
            raise EngineError(f"node {node!r}: {found} match (use the node ID)")
        return str(matches[0])

    # --- instances -------------------------------------------------------------------

    async def create_instance(
        self,
        spec: InstanceSpec,
        *,
        target_ports: Sequence[int] = (80,),
        node: str | None = None,
        auth: RegistryAuth | None = None,
    ) -> str:
        """Create the service of one instance slot; its ID. ``node`` pins it (volumes).

        The image is pinned to what the manager has (``repo@sha256:…`` or the
        image ID): a node that holds it then starts the task without asking a
        registry — a tag makes every node try a pull first (~20 s here until
        the unreachable registry gives up, then the local copy is used); a node
        that lacks it pulls it by that digest. ``auth`` goes along as the
        service's ``X-Registry-Auth`` (``--with-registry-auth``): Swarm keeps it
        with the service (updates without the header keep it) and gives it to
        the node that runs the task (patrd/engine/swarm_images.py).
        """
        spec = replace(spec, image=await self._pinned(spec.image))
        async with self._configs:
            configs = await ensure_configs(self.docker, spec, self._owner)
            body = service_spec(
                spec,
                owner=self._owner,
                hardening=self._hardening,
                target_ports=target_ports,
                node_id=node,
                restart_delay_s=self._restart_delay_s,
                configs=configs,
            )
            return await self._create_service(spec, body, node, auth)

    async def _create_service(
        self,
        spec: InstanceSpec,
        body: Mapping[str, Any],
        node: str | None,
        auth: RegistryAuth | None,
    ) -> str:
        try:
            created = await self.docker._query_json(
                "services/create",
                method="POST",
                data=json.dumps(body),
                headers={"X-Registry-Auth": registry_auth_header(auth)} if auth else None,
            )
        except aiodocker.DockerError as exc:
            if exc.status == 409:
                return await self._existing_id(spec.container_name)
            raise EngineError(f"create service {spec.container_name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"create service {spec.container_name}: {exc}") from exc
        self._log.info("service created", service=spec.container_name, node=node)
        return str(created["ID"])

    async def _pinned(self, ref: str) -> str:
        try:
            info = await self.docker.images.inspect(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return ref  # not on the manager: the nodes pull it by this name
            raise EngineError(f"inspect image {ref}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"inspect image {ref}: {exc}") from exc
        return pinned_reference(ref, info)

    async def _existing_id(self, name: str) -> str:
        async with _translate(f"inspect service {name}"):
            info = await self.docker.services.inspect(name)
        labels = info["Spec"].get("Labels") or {}
        if LABEL_MANAGED not in labels:
            raise EngineError(f"service name {name} is taken by a service patrd did not create")
        return str(info["ID"])

    async def start(self, container_id: str) -> None:
        """Swarm starts a service's task on creation: nothing to do."""

    async def restart(self, container_id: str, stop_timeout_s: int) -> None:
        """Replace the task (``docker service update --force``)."""
        async with _translate(f"restart service {container_id[:12]}"):
            info = await self.docker.services.inspect(container_id)
            spec = dict(info["Spec"])
            template = dict(spec["TaskTemplate"])
            template["ForceUpdate"] = int(template.get("ForceUpdate", 0)) + 1
            spec["TaskTemplate"] = template
            await self.docker._query_json(
                f"services/{container_id}/update",
                method="POST",
                params={"version": str(info["Version"]["Index"])},
                data=json.dumps(spec),
            )

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        """Stop the service's task: scale to 0, wait until its node reports it stopped.

        Swarm then deletes the task (desired state ``remove``), and its log with it.
        """
        what = f"stop service {container_id[:12]}"
        try:
            info = await self.docker.services.inspect(container_id)
            spec = dict(info["Spec"])
            if spec.get("Mode") != {"Replicated": {"Replicas": 0}}:
                spec["Mode"] = {"Replicated": {"Replicas": 0}}
                await self.docker._query_json(
                    f"services/{container_id}/update",
                    method="POST",
                    params={"version": str(info["Version"]["Index"])},
                    data=json.dumps(spec),
                )
            deadline = time.monotonic() + stop_timeout_s + 30
            while time.monotonic() < deadline:
                tasks = await self.docker.tasks.list(filters={"service": [container_id]})
                states = {(t.get("Status") or {}).get("State") for t in tasks}
                if not states & ({"running"} | STARTING_STATES):
                    return
                await asyncio.sleep(0.3)
            self._log.warning("task still running", service=container_id[:12])
        except aiodocker.DockerError as exc:
            if exc.status == 404:  # gone already (or removed meanwhile)
                return
            raise EngineError(f"{what}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"{what}: Docker unreachable: {exc}") from exc

    async def remove(self, container_id: str, stop_timeout_s: int) -> None:
        """Stop the task (:meth:`stop`), then delete the service.

        Deleting a service at once returns before the node has stopped its
        container; scaling to 0 first makes ``remove`` return only once the
        instance no longer serves (bounded by the stop timeout + 30 s).
        """
        await self.stop(container_id, stop_timeout_s)
        try:
            async with _translate(f"remove service {container_id[:12]}"):
                await self.docker.services.delete(container_id)
            self._log.info("service removed", service=container_id[:12])
        except EngineError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, aiodocker.DockerError) and cause.status == 404):
                raise
            # gone already (or removed meanwhile): its configs may be left
        await self.collect_configs()

    async def collect_configs(self) -> list[str]:
        """Remove the configs no service of this install mounts any more; their names.

        A failure is logged, not raised: the service is gone, and the next
        removal collects again."""
        try:
            async with self._configs:
                return await remove_unused(self.docker, self._owner)
        except EngineError as exc:
            self._log.warning("configs_not_collected", error=str(exc))
            return []

    async def list_tasks(self, deployment_id: str | None = None) -> list[SwarmInstance]:
        """Every patrd service of this owner with its current task, node and port."""
        labels = [f"{LABEL_OWNER}={self._owner}"]
        if deployment_id:
            labels.append(f"{LABEL_DEPLOYMENT_ID}={deployment_id}")
        async with _translate("list services"):
            services = await self.docker.services.list(filters={"label": labels})
        if not services:
            return []
        async with _translate("list tasks"):
            tasks = await self.docker.tasks.list(filters={"label": labels})
            raw_nodes = await self.docker.nodes.list()
        addresses = {n["ID"]: node_address(n) for n in raw_nodes}
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        result = []
        for service in services:
            tasks_of = by_service.get(service["ID"], [])
            swarm_instance = swarm_instance_from(service, current_task(tasks_of), addresses)
            if swarm_instance is not None:
                error = recent_failure(tasks_of, addresses)
                if error and swarm_instance.instance.state is not ContainerState.RUNNING:
                    swarm_instance = replace(
                        swarm_instance, instance=replace(swarm_instance.instance, error=error)
                    )
                result.append(swarm_instance)
        return result

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        """``Engine`` view: ``ip`` is the node's address (the port is in list_tasks)."""
        return [s.instance for s in await self.list_tasks(deployment_id)]

    # --- networks and images ----------------------------------------------------------

    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None:
        """An attachable overlay per deployment: its instances reach each other by name."""
        async with _translate(f"inspect network {name}"):
            existing = await self.docker.networks.list(filters={"name": [name]})
        if any(n["Name"] == name for n in existing):
            return
        config = {
            "Name": name,
            "Driver": "overlay",
            "Attachable": True,
            "CheckDuplicate": True,
            "Labels": deployment_labels(self._owner, deployment, deployment_id),
        }
        async with _translate(f"create network {name}"):
            await self.docker.networks.create(config)

    async def list_networks(self) -> list[NetworkInfo]:
        async with _translate("list networks"):
            networks = await self.docker.networks.list(
                filters={"label": [f"{LABEL_OWNER}={self._owner}"]}
            )
        return [
            NetworkInfo(
                name=n["Name"], deployment_id=(n.get("Labels") or {}).get(LABEL_DEPLOYMENT_ID, "")
            )
            for n in networks
        ]

    async def remove_network(self, name: str) -> None:
        try:
            await (await self.docker.networks.get(name)).delete()
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise EngineError(f"remove network {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove network {name}: {exc}") from exc

    async def ensure_image(self, ref: str, **_: Any) -> ImageResult:
        """The image as the manager has it. Every node pulls for itself at task start,
        so a multi-node deployment needs a registry all nodes reach (not done yet)."""
        try:
            info = await self.docker.images.inspect(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise ImageNotFound(f"image {ref} is not on the manager") from exc
            raise EngineError(f"inspect image {ref}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"inspect image {ref}: {exc}") from exc
        return ImageResult(image_id=str(info["Id"]), pulled=False, warning=None)


# --- pure translation: patrd ↔ Engine API documents ---------------------------------


def service_spec(
    spec: InstanceSpec,
    *,
    owner: str,
    hardening: Hardening,
    target_ports: Sequence[int],
    node_id: str | None = None,
    restart_delay_s: float = 2,
    configs: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The ``ServiceSpec`` of one instance slot (``POST /services/create``).

    ``configs``: the Swarm configs of its config files (patrd/engine/swarm_configs.py).
    """
    labels = {
        **instance_labels(
            owner, spec.deployment, spec.deployment_id, spec.revision, spec.slot, spec.template
        ),
    }
    h = replace(
        hardening,
        capabilities=tuple(sorted({*hardening.capabilities, *spec.extra_capabilities})),
        pids_limit=hardening.pids_limit if spec.pids_limit is None else spec.pids_limit,
    )
    limits: dict[str, Any] = {
        "NanoCPUs": int(spec.cpu * 1e9),
        "MemoryBytes": spec.memory_mb * 1024 * 1024,
    }
    if h.pids_limit:
        limits["Pids"] = h.pids_limit
    container: dict[str, Any] = {
        "Image": spec.image,
        "Hostname": spec.hostname,
        "Env": [f"{k}={v}" for k, v in spec.env],
        "Labels": labels,
        # An init as PID 1 forwards SIGTERM (busybox httpd as PID 1 ignores it).
        "Init": True,
        "StopGracePeriod": spec.stop_timeout_s * 1_000_000_000,
        "CapabilityDrop": ["ALL"],
        "CapabilityAdd": sorted(set(h.capabilities)),
        # The task's node creates each volume on first use, labelled as DockerEngine
        # labels its own: its agent then lists and removes only patrd's.
        "Mounts": [
            {
                "Type": "volume",
                "Source": name,
                "Target": path,
                "VolumeOptions": {
                    "Labels": named_volume_labels(owner, spec.deployment, name, spec.slot)
                },
            }
            for name, path in spec.volumes
        ],
    }
    if configs:
        # Swarm gives them to whichever node runs the task (no host directory).
        container["Configs"] = [dict(c) for c in configs]
    placement: dict[str, Any] = {}
    if node_id:
        placement["Constraints"] = [f"node.id=={node_id}"]
    return {
        "Name": spec.container_name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": limits},
            # Swarm must replace tasks itself (a drained or lost node has no patrd
            # to do it); the delay keeps a crashing image from spinning.
            "RestartPolicy": {
                "Condition": "any",
                "Delay": int(restart_delay_s * 1e9),
                "MaxAttempts": 0,
            },
            "Placement": placement,
            "Networks": [{"Target": spec.network, "Aliases": [spec.hostname]}]
            if spec.network
            else [],
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {
            "Mode": "vip",
            "Ports": [
                {"Protocol": "tcp", "TargetPort": port, "PublishMode": "host"}
                for port in target_ports
            ],
        },
    }


def pinned_reference(ref: str, image: Mapping[str, Any]) -> str:
    """``ref`` pinned to an inspected image: its ``repo@sha256:…`` else its ID."""
    if "@sha256:" in ref or ref.startswith("sha256:"):
        return ref
    name = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    for digest in image.get("RepoDigests") or []:
        if str(digest).split("@", 1)[0] == name:
            return str(digest)
    return str(image["Id"])


def node_address(node: Mapping[str, Any]) -> str:
    """The address a node advertises (the manager's may read 0.0.0.0 in Status)."""
    addr = str((node.get("Status") or {}).get("Addr") or "")
    if addr in ("", "0.0.0.0"):
        manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
        addr = manager.rsplit(":", 1)[0]
    return addr


def node_info(node: Mapping[str, Any], instances: Mapping[str, int]) -> NodeInfo:
    description = node.get("Description") or {}
    resources = description.get("Resources") or {}
    spec = node.get("Spec") or {}
    return NodeInfo(
        node_id=str(node["ID"]),
        hostname=str(description.get("Hostname", "")),
        address=node_address(node),
        role=str(spec.get("Role", "")),
        state=str((node.get("Status") or {}).get("State", "unknown")),
        availability=str(spec.get("Availability", "")),
        leader=bool((node.get("ManagerStatus") or {}).get("Leader", False)),
        cpus=int(resources.get("NanoCPUs", 0)) / 1e9,
        memory_bytes=int(resources.get("MemoryBytes", 0)),
        labels=dict(spec.get("Labels") or {}),
        instances=instances.get(str(node["ID"]), 0),
    )
