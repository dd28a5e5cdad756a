"""Instances, volumes, networks and images as patrd speaks of them. Pure.

What the engine adapters (patrd/engine/docker.py, swarm.py) report and take:
no Docker client here, so the planner, the API and the tests read these
without loading one. The ``Engine`` protocol itself is patrd/engine/protocol.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

ProgressCallback = Callable[[str], Awaitable[None]]


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Instance:
    """A container patrd created, as the engine reports it now."""

    container_id: str
    container_name: str
    deployment_id: str
    deployment: str
    revision: int
    slot: int
    state: ContainerState
    ip: str | None
    exit_code: int | None
    template: str = ""
    # Where each container port is reached at ``ip`` when that is not the port
    # itself: (container port, published port) pairs. Empty on one node (the
    # container's own address); the Swarm engine's host-mode published ports.
    ports: tuple[tuple[int, int], ...] = ()
    # Why the engine could not run it lately, while it is not running (Swarm:
    # a rejected task, e.g. a node that could not pull the image); "" if none.
    error: str = ""
    # The node this instance waits for because that node holds its volume data
    # and is drained, down or unreachable (Swarm): "hostname (node ID)". "" when
    # it does not wait (always on one node).
    waiting_for: str = ""

    def reach(self, port: int) -> int:
        """The port patrd dials at ``ip`` for container port ``port``."""
        return dict(self.ports).get(port, port)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Everything needed to create one container of a deployment."""

    container_name: str
    deployment_id: str
    deployment: str
    revision: int
    slot: int
    template: str
    image: str
    env: tuple[tuple[str, str], ...]
    network: str
    hostname: str
    cpu: float
    memory_mb: int
    stop_timeout_s: int
    config_dir: str | None = None  # host directory mounted read-only at /etc/config
    # The files themselves (name, content): the swarm backend makes Swarm configs of them.
    config_files: tuple[tuple[str, bytes], ...] = ()
    volumes: tuple[tuple[str, str], ...] = ()  # (Docker volume name, mount path)
    extra_capabilities: tuple[str, ...] = ()  # the deployment's explicit `security` field
    pids_limit: int | None = None  # None: the node's default
    ports: tuple[int, ...] = ()  # container ports it serves (the Swarm engine publishes them)


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    name: str
    deployment: str
    volume: str  # the deployment's volume name
    slot: int
    mountpoint: str


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    name: str
    deployment_id: str
    bridge: str = ""  # the Linux bridge interface (br-<id>), for the firewall


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Pull credentials for a private registry (from a secret); repr hides them."""

    server: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryAuth(server={self.server!r}, username=<hidden>, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class ImageResult:
    image_id: str
    pulled: bool
    warning: str | None  # pull failed but a local copy was used
    fresh: bool = False  # pulled, and not here under this name before (patrd pulled it)


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    output: bytes  # stdout and stderr interleaved, at most the adapter's cap (64 KiB)


@dataclass(frozen=True, slots=True)
class EngineEvent:
    deployment_id: str
    container_id: str
    action: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class OneOff:
    container_id: str
    deployment_id: str
    run: str  # the ``patrd.oneoff`` label: who started it (a run id, a job run)
    running: bool
    started: bool = True  # False: created, never started


def is_pinned_tag(tag: str) -> bool:
    """Pull policy: ``latest`` is always pulled, any other tag only when missing."""
    return tag != "latest"
