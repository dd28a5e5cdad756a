"""The Swarm engine as the controller's ``Engine`` (``engine.backend = "swarm"``).

:class:`~patrd.engine.swarm.SwarmEngine` speaks services, tasks and nodes;
this adapter gives the controller an ``Engine`` over it:

* **Instances are tasks.** ``container_id`` is ``SERVICE.TASK``: a task Swarm
  moved to another node (drain, node lost) is a new instance for the executor
  (probed again, a new pool entry), while remove/restart act on the service,
  the part before the dot (:func:`service_of`).
* **Per-instance addresses.** ``ip`` is the node's address and ``ports`` the
  task's host-mode published ports, so the proxy dials ``node:published``
  (``Instance.reach``): per-instance health and least-outstanding balancing
  as on one node, never Swarm's virtual IP.
* **Withheld nodes.** A task on a node that is leaving (a drain patrd started),
  drained, paused or not ready is reported running *without an address*: the
  executor takes it out of the proxy pools (the planner leaves it alone)
  before Swarm stops it (patrd/control/nodes.py orders a drain so).
* **Images** are resolved by the manager's own engine (a ``DockerEngine`` on
  the same socket, with the deployment's credential); a task names the
  manager's ``repo@sha256:…`` of it (the ID when it has no registry digest)
  and carries that credential, so every node pulls it for itself
  (patrd/engine/swarm_images.py).
* **Events** by polling the tasks (the manager emits no task events). Each
  poll also knocks on every node's gossip port (TCP 7946, open on every
  swarm node while its engine runs): a node that refuses or does not answer
  is withheld at once, instead of ~15 s later when the manager marks it
  ``down`` (docs/design.md has both figures).

* **Moving in from the docker backend.** patrd's plain containers on the
  manager (from before the switch) are listed too, as instances of another
  template: the planner rolls them over to services one slot at a time,
  as in any rollout, and they keep serving until their replacement is
  ready; remove/restart of a container ID (64 hex digits) go to the
  manager's engine. Overlays are named ``psw-<deployment>`` so they never
  clash with such a deployment's bridge network (``patrd-<deployment>``).
* **Volumes stay on their node.** A local volume lives on the node that ran
  the task. The first time a slot's volume is needed patrd picks its home
  (the active, ready node with the fewest patrd instances), records it as a
  node label ``patrd.volume.<volume name>`` (value: this install's owner ID)
  and pins every service of that slot to it (``node.id==``). Swarm never
  moves it: while its node is drained or down the instance waits there,
  and ``Instance.waiting_for`` names that node (:func:`waiting_for`): the
  planner puts it in the status reason, the worker writes one event.
  The node creates it labelled; its agent lists and removes it for the
  manager (scale-down, delete), and the home record goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import structlog

from patrd.engine.docker import DockerEngine
from patrd.engine.docker_base import translate as _translate
from patrd.engine.docker_containers import instance_from_summary
from patrd.engine.docker_exec import log_params, stream_logs
from patrd.engine.labels import LABEL_DEPLOYMENT_ID, LABEL_OWNER
from patrd.engine.swarm import Availability, NodeInfo, SwarmEngine, node_address
from patrd.engine.swarm_images import (
    PullSource,
    for_nodes,
    is_image_id,
    node_reference,
    remember,
)
from patrd.engine.swarm_tasks import SwarmInstance
from patrd.model.errors import EngineError
from patrd.model.instances import (
    EngineEvent,
    ImageResult,
    Instance,
    InstanceSpec,
    NetworkInfo,
    ProgressCallback,
    RegistryAuth,
    VolumeInfo,
)

EVENTS_POLL_S = 1.0  # how often the task list is compared for the controller's wake-ups
VOLUME_LABEL = "patrd.volume."  # + volume name, on the node that holds it
# Overlays are ``psw-<deployment>``: a DNS label (Swarm requires it; 4 + 57 ≤ 63) that
# never equals a docker-backend bridge (always ``patrd-<deployment>``).
OVERLAY_PREFIX = "psw-"
BRIDGE_PREFIX = "patrd-"
STANDALONE = "+standalone"  # appended to a plain container's template: always stale here
SWARM_TASK_LABEL = "com.docker.swarm.task.id"  # Docker's, on a task's container
_HEX = frozenset("0123456789abcdef")
GOSSIP_PORT = 7946  # swarm's node-to-node port (TCP and UDP), on every node
KNOCK_TIMEOUT_S = 0.5
TASK_LOGS_TIMEOUT_S = 15.0  # a task's log (not followed), through the manager
DEFAULT_TARGET_PORT = 80  # an InstanceSpec without ports (one-offs): what Swarm publishes


def is_container_id(instance_id: str) -> bool:
    """A plain container's ID (64 hex digits), not ``SERVICE.TASK`` (Swarm IDs are base 36)."""
    return len(instance_id) == 64 and set(instance_id) <= _HEX


def overlay(network: str) -> str:
    """The overlay standing for the executor's network name ``patrd-<deployment>``."""
    if network.startswith(OVERLAY_PREFIX):
        return network
    return OVERLAY_PREFIX + network.removeprefix(BRIDGE_PREFIX)


def standalone_instances(summaries: Iterable[Mapping[str, Any]]) -> list[Instance]:
    """patrd's plain containers among the manager's (not Swarm tasks), marked stale."""
    found = []
    for summary in summaries:
        if SWARM_TASK_LABEL in (summary.get("Labels") or {}):
            continue
        inst = instance_from_summary(dict(summary))
        if inst is not None:
            found.append(replace(inst, template=inst.template + STANDALONE))
    return found


def service_of(container_id: str) -> str:
    """The service ID in a ``SERVICE.TASK`` instance ID (Docker IDs have no dots)."""
    return container_id.split(".", 1)[0]


def task_of(container_id: str) -> str:
    """The task ID in a ``SERVICE.TASK`` instance ID ("" while the slot has no task)."""
    return container_id.partition(".")[2]


def nodes_out(raw_nodes: Iterable[Mapping[str, Any]], leaving: Collection[str]) -> set[str]:
    """Node IDs whose tasks must not serve: leaving, not active, or not ready."""
    out = set(leaving)
    for node in raw_nodes:
        spec = node.get("Spec") or {}
        state = (node.get("Status") or {}).get("State")
        if spec.get("Availability") != Availability.ACTIVE.value or state != "ready":
            out.add(str(node["ID"]))
    return out


def as_instance(
    task: SwarmInstance, out: Collection[str], nodes: Mapping[str, Mapping[str, Any]] | None = None
) -> Instance:
    """The executor's view of one slot's current task (see the module docstring).

    ``nodes`` (node ID → the manager's node object): when given, a task pinned
    to a node that is out of service or gone says which node it waits for.
    """
    inst = task.instance
    container_id = f"{task.service_id}.{task.task_id}" if task.task_id else task.service_id
    waiting = waiting_for(task.pinned, out, nodes) if nodes is not None else ""
    if task.node_id in out:
        return replace(inst, container_id=container_id, ip=None, ports=(), waiting_for=waiting)
    return replace(
        inst,
        container_id=container_id,
        ports=tuple(sorted(task.ports.items())),
        waiting_for=waiting,
    )


def waiting_for(pinned: str, out: Collection[str], nodes: Mapping[str, Mapping[str, Any]]) -> str:
    """The node a task pinned to its volumes' home waits for: "hostname (ID)" when
    that node is out of service (``nodes_out``) or no longer in the swarm, else ""."""
    if not pinned or (pinned not in out and pinned in nodes):
        return ""
    short = pinned[:12]
    hostname = str(((nodes.get(pinned) or {}).get("Description") or {}).get("Hostname") or "")
    return f"{hostname} ({short})" if hostname else short


def volume_home(
    raw_nodes: Iterable[Mapping[str, Any]], volumes: Iterable[str], owner: str
) -> str | None:
    """The node recorded as holding any of ``volumes``, if one is."""
    wanted = [VOLUME_LABEL + v for v in volumes]
    for node in raw_nodes:
        labels = (node.get("Spec") or {}).get("Labels") or {}
        if any(labels.get(key) == owner for key in wanted):
            return str(node["ID"])
    return None


def homes_recorded(raw_nodes: Iterable[Mapping[str, Any]], owner: str) -> dict[str, int]:
    """Node ID → how many of this install's volumes are recorded on it."""
    return {
        str(n["ID"]): sum(
            1
            for key, value in ((n.get("Spec") or {}).get("Labels") or {}).items()
            if key.startswith(VOLUME_LABEL) and value == owner
        )
        for n in raw_nodes
    }


def pick_home(
    raw_nodes: Iterable[Mapping[str, Any]], instances: Mapping[str, int], out: Collection[str]
) -> str | None:
    """A new volume's node: active, ready and in service, with the fewest patrd instances."""
    candidates = [
        str(n["ID"]) for n in raw_nodes if str(n["ID"]) not in nodes_out([n], ()) | set(out)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda node: (instances.get(node, 0), node))


def unreachable(
    addresses: Mapping[str, str], answers: Iterable[bool], self_id: str
) -> set[str] | None:
    """Nodes whose knock failed; None when this node's own failed too: then the
    knock says nothing about the others (a local firewall, say), and withholding
    every instance would be an outage of patrd's making."""
    failed = {n for n, ok in zip(addresses, answers, strict=True) if not ok and addresses[n]}
    return None if self_id in failed else failed


def changes(
    before: Mapping[str, tuple[str, str, str | None]],
    now: Mapping[str, tuple[str, str, str | None]],
) -> list[tuple[str, str, str]]:
    """(deployment id, container id, action) for every instance that came, went or changed."""
    found = []
    for cid, (dep, state, ip) in now.items():
        if before.get(cid) != (dep, state, ip):
            found.append((dep, cid, state))
    found += [(dep, cid, "destroy") for cid, (dep, _, _) in before.items() if cid not in now]
    return found


async def knock(address: str, port: int, timeout_s: float) -> bool:
    """Does ``address:port`` accept a TCP connection within ``timeout_s``?"""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(address, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class NodeVolumes(Protocol):
    """Deployment volumes on the other nodes, through their agents
    (patrd/observe/agent_client.py ``AgentVolumes``)."""

    async def list(self, deployment: str) -> list[VolumeInfo]: ...
    async def remove(self, name: str) -> None: ...


class SwarmBackend:
    """``Engine`` (patrd/engine/docker.py) over a swarm manager's Docker API."""

    def __init__(
        self,
        swarm: SwarmEngine,
        manager: DockerEngine,
        owner: str,
        node_registry: tuple[str, str] = ("", ""),
    ) -> None:
        """``node_registry``: the node registry as the manager pulls it and as every
        node does (``registry.host``, ``registry.nodes_host``); empty: none."""
        self.swarm = swarm
        self._node_registry = node_registry
        self._owner = owner
        self._manager = manager  # this node's engine: images, digests, its plain containers
        self._self_id = ""  # this node's swarm node ID (asked once)
        self._leaving: set[str] = set()
        self._unreachable: set[str] = set()  # nodes whose gossip port did not answer, last poll
        # One pick at a time: slots created together must see each other's homes.
        self._homes = asyncio.Lock()
        # Image ID → where it came from and with which credential (ensure_image),
        # for the services that run it (create_instance). One entry per image.
        self._sources: dict[str, PullSource] = {}
        self.node_volumes: NodeVolumes | None = None  # set when the agents are wired
        self._log = structlog.get_logger("patrd.engine.swarm_backend")

    # --- nodes (patrd/control/nodes.py) -------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        return await self.swarm.nodes()

    def withhold(self, node_id: str) -> None:
        """Take the node's tasks out of service (the next listing) ahead of a drain."""
        self._leaving.add(node_id)

    def release(self, node_id: str) -> None:
        self._leaving.discard(node_id)

    async def set_availability(self, node_id: str, availability: str) -> NodeInfo:
        return await self.swarm.set_availability(node_id, availability)

    async def node_tasks(self, node_id: str) -> list[SwarmInstance]:
        return [t for t in await self.swarm.list_tasks() if t.node_id == node_id]

    # --- Engine ------------------------------------------------------------------

    async def ping(self) -> str:
        return await self.swarm.ping()

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        plain = await self._standalone(deployment_id)
        tasks = await self.swarm.list_tasks(deployment_id)
        if not tasks:
            return plain
        async with _translate("list nodes"):
            raw = await self.swarm.docker.nodes.list()
        out = nodes_out(raw, self._leaving | self._unreachable)
        by_id = {str(n["ID"]): n for n in raw}
        return [as_instance(t, out, by_id) for t in tasks] + plain

    async def _standalone(self, deployment_id: str | None) -> list[Instance]:
        labels = [f"{LABEL_OWNER}={self._owner}"]
        if deployment_id:
            labels.append(f"{LABEL_DEPLOYMENT_ID}={deployment_id}")
        async with _translate("list containers"):
            containers = await self._manager.docker.containers.list(
                all=True, filters=json.dumps({"label": labels})
            )
        return standalone_instances(c._container for c in containers)

    async def knock_nodes(self) -> set[str]:
        """Knock on every node's gossip port; remember (and return) those that failed."""
        async with _translate("list nodes"):
            raw = await self.swarm.docker.nodes.list()
        self_id = await self._self_node()
        addresses = {str(n["ID"]): node_address(n) for n in raw}
        answers = await asyncio.gather(
            *(knock(a, GOSSIP_PORT, KNOCK_TIMEOUT_S) for a in addresses.values())
        )
        failed = unreachable(addresses, answers, self_id)
        if failed is None:
            self._log.warning("knock_failed_here", note="this node does not answer: not trusted")
            failed = set()
        self._unreachable = failed
        return failed

    async def _self_node(self) -> str:
        if not self._self_id:
            async with _translate("info"):
                info = await self.swarm.docker.system.info()
            self._self_id = str((info.get("Swarm") or {}).get("NodeID") or "")
        return self._self_id

    async def agent_nodes(self) -> tuple[str, dict[str, str]]:
        """(this node's ID, ready node ID → address): whose agents the sampler asks."""
        async with _translate("list nodes"):
            raw = await self.swarm.docker.nodes.list()
        ready = {
            str(n["ID"]): node_address(n)
            for n in raw
            if (n.get("Status") or {}).get("State") == "ready"
        }
        return await self._self_node(), {n: a for n, a in ready.items() if a}

    async def list_networks(self) -> list[NetworkInfo]:
        """The overlays, and the bridges left by the docker backend (collected as orphans)."""
        found = {n.name: n for n in await self._manager.list_networks()}
        found.update({n.name: n for n in await self.swarm.list_networks()})
        return list(found.values())

    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None:
        await self.swarm.ensure_network(overlay(name), deployment, deployment_id)

    async def remove_network(self, name: str) -> None:
        if name.startswith(OVERLAY_PREFIX):
            await self.swarm.remove_network(name)
        else:
            await self._manager.remove_network(name)

    async def ensure_image(
        self,
        ref: str,
        *,
        always_pull: bool,
        progress: ProgressCallback | None = None,
        auth: RegistryAuth | None = None,
        refuse_pull: str = "",
    ) -> ImageResult:
        """The manager's copy (pulled with ``auth`` if missing); remembers the
        repository and credential for the services that will run it."""
        result = await self._manager.ensure_image(
            ref, always_pull=always_pull, progress=progress, auth=auth, refuse_pull=refuse_pull
        )
        self._sources[result.image_id] = remember(self._sources.get(result.image_id), ref, auth)
        return result

    async def create_instance(self, spec: InstanceSpec) -> str:
        home = await self._volume_home(spec) if spec.volumes else None
        if spec.network:
            spec = replace(spec, network=overlay(spec.network))
        source = self._sources.get(spec.image)
        ref = spec.image
        if is_image_id(ref):
            ref = node_reference(ref, await self._manager.repo_digests(ref), source)
        ref, auth = for_nodes(ref, source.auth if source else None, *self._node_registry)
        return await self.swarm.create_instance(
            replace(spec, image=ref),
            target_ports=spec.ports or (DEFAULT_TARGET_PORT,),
            node=home,
            auth=auth,
        )

    async def _volume_home(self, spec: InstanceSpec) -> str:
        async with self._homes:
            return await self._volume_home_locked(spec)

    async def _volume_home_locked(self, spec: InstanceSpec) -> str:
        """The node holding the slot's volumes: recorded, else picked and recorded now."""
        names = [name for name, _ in spec.volumes]
        async with _translate("list nodes"):
            raw = await self.swarm.docker.nodes.list()
        home = volume_home(raw, names, self._owner)
        if home is None and set(names) & {
            v.name for v in await self._manager.list_volumes(spec.deployment)
        }:
            # Made by the docker backend before the switch: its data is on the manager.
            async with _translate("info"):
                home = str(((await self.swarm.docker.system.info()).get("Swarm") or {})["NodeID"])
        if home is not None:
            return home
        tasks = await self.swarm.list_tasks()
        counts = Counter(t.node_id for t in tasks if t.desired_state == "running")
        counts.update(homes_recorded(raw, self._owner))  # volumes whose tasks are not placed yet
        home = pick_home(raw, counts, self._leaving | self._unreachable)
        if home is None:
            raise EngineError(f"no active, ready node for the volumes of {spec.hostname}")
        async with _translate(f"label node {home[:12]}"):
            node = await self.swarm.docker.nodes.inspect(node_id=home)
            node_spec = dict(node["Spec"])
            labels = dict(node_spec.get("Labels") or {})
            labels.update({VOLUME_LABEL + name: self._owner for name in names})
            node_spec["Labels"] = labels
            await self.swarm.docker.nodes.update(
                node_id=home, version=node["Version"]["Index"], spec=node_spec
            )
        return home

    async def remote_digest(self, ref: str, auth: RegistryAuth | None = None) -> str:
        return await self._manager.remote_digest(ref, auth)

    async def repo_digests(self, image: str) -> list[str]:
        return await self._manager.repo_digests(image)

    async def start(self, container_id: str) -> None:
        """Swarm starts (and restarts) tasks itself; a plain container is started as before."""
        if is_container_id(container_id):
            await self._manager.start(container_id)

    async def remove(self, container_id: str, stop_timeout_s: int) -> None:
        if is_container_id(container_id):
            await self._manager.remove(container_id, stop_timeout_s)
        else:
            await self.swarm.remove(service_of(container_id), stop_timeout_s)

    async def restart(self, container_id: str, stop_timeout_s: int) -> None:
        if is_container_id(container_id):
            await self._manager.restart(container_id, stop_timeout_s)
        else:
            await self.swarm.restart(service_of(container_id), stop_timeout_s)

    # --- logs (patrd/observe/logs.py: the API's reader and the keeper) -------------

    def logs(
        self,
        container_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """An instance's log wherever it runs: a task's through the manager's
        ``/tasks/{id}/logs`` (no ``until`` there: the reader filters), a plain
        container's from the manager's engine."""
        if is_container_id(container_id):
            return self._manager.logs(
                container_id, since=since, until=until, tail=tail, follow=follow
            )
        return self._task_logs(task_of(container_id), since=since, tail=tail, follow=follow)

    async def _task_logs(
        self, task_id: str, *, since: float | None, tail: int | None, follow: bool
    ) -> AsyncIterator[tuple[str, bytes]]:
        if not task_id:
            return  # Swarm has not scheduled the slot's first task yet
        params = log_params(since=since, until=None, tail=tail, follow=follow)
        frames = stream_logs(
            self.swarm.docker,
            f"tasks/{task_id}/logs",
            params,
            f"logs of task {task_id[:12]}",
            timeout_s=TASK_LOGS_TIMEOUT_S,
        )
        async with contextlib.aclosing(frames):
            async for frame in frames:
                yield frame

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        """For the log keeper, before ``remove``: a plain container is stopped (its
        shutdown lines are kept); a task is left running. Scaled to 0, Swarm marks
        its task for removal and deletes it as soon as it stopped, its log with it
        ("task not found" a moment later), so the keeper reads a task's log while it
        runs and its shutdown lines are not kept."""
        if is_container_id(container_id):
            await self._manager.stop(container_id, stop_timeout_s)

    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str:
        """The name: the home node's engine creates the volume when the task starts
        (a volume the docker backend made on the manager keeps its name)."""
        for found in await self._manager.list_volumes(deployment):
            if (found.volume, found.slot) == (volume, slot):
                return found.name
        return name

    async def list_volumes(self, deployment: str) -> list[VolumeInfo]:
        """This node's volumes of the deployment, and the other nodes' from their agents
        (none without agents: their data then stays on their node)."""
        found = {v.name: v for v in await self._manager.list_volumes(deployment)}
        if self.node_volumes is not None:
            for v in await self.node_volumes.list(deployment):
                found.setdefault(v.name, v)
        return sorted(found.values(), key=lambda v: (v.volume, v.slot))

    async def remove_volume(self, name: str) -> None:
        """Remove it wherever it is (here, and through every other node's agent), and
        its home record: the slot, if it comes back, picks a node afresh."""
        await self._drop_stopped_tasks_of(name)
        await self._manager.remove_volume(name)
        if self.node_volumes is not None:
            await self.node_volumes.remove(name)
        async with self._homes, _translate("list nodes"):
            for node in await self.swarm.docker.nodes.list():
                spec = dict(node.get("Spec") or {})
                labels = dict(spec.get("Labels") or {})
                if labels.pop(VOLUME_LABEL + name, None) != self._owner:
                    continue
                spec["Labels"] = labels
                await self.swarm.docker.nodes.update(
                    node_id=node["ID"], version=node["Version"]["Index"], spec=spec
                )

    async def _drop_stopped_tasks_of(self, volume: str) -> None:
        """The stopped task containers here that hold ``volume`` (this install's only):
        Swarm's executor removes a deleted service's container some time later, and
        until then the volume is in use; the agents wait for it, this node removes it."""
        filters = {"volume": [volume], "label": [f"{LABEL_OWNER}={self._owner}"]}
        async with _translate(f"list containers of volume {volume}"):
            found = await self._manager.docker.containers.list(
                all=True, filters=json.dumps({**filters, "status": ["exited", "dead", "created"]})
            )
        for container in found:
            with contextlib.suppress(EngineError):
                async with _translate(f"remove stopped task {container.id[:12]}"):
                    await container.delete(force=True)

    async def events(self) -> AsyncIterator[EngineEvent]:
        """A wake-up per instance that came, went or changed state or address.

        Polls the tasks every ``EVENTS_POLL_S`` until the manager fails (then
        ``EngineError``, and the controller reconnects as for Docker events).
        """
        before = self._summary(await self.list_instances())
        while True:
            await asyncio.sleep(EVENTS_POLL_S)
            await self.knock_nodes()
            now = self._summary(await self.list_instances())
            for dep, cid, action in changes(before, now):
                yield EngineEvent(dep, cid, action, time.time_ns())
            before = now

    @staticmethod
    def _summary(instances: Iterable[Instance]) -> dict[str, tuple[str, str, str | None]]:
        return {i.container_id: (i.deployment_id, i.state.value, i.ip) for i in instances}

    async def close(self) -> None:
        await self.swarm.close()  # the manager's DockerEngine is its owner's to close
