"""A ``FakeEngine``: the Engine protocol (patrd/engine/protocol.py) in memory, for unit tests.

Containers are records; a started one gets its own loopback address
(127.77.x.y, every 127/8 address is local on Linux) and, unless its image is
set to crash, a TCP listener on ``port`` there, so the controller's default
readiness check (a TCP connect to the first HTTP port) really passes.

Behaviour per image reference (``tag`` included), set by the test:
``fail_start``: ``start`` raises ``EngineError``; ``crash``: the container
exits (code 1) right after it starts; ``missing``: ``ensure_image`` raises
``ImageNotFound``. Per container id: ``stale_task``: ``start`` fails the way
containerd does when it kept the task of a container from before a Docker
restart; ``away``: ``start`` fails as if dockerd went away under it. Every
call is appended to ``calls``; events (start, die, destroy) go to ``events()``
like Docker's stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from patrd.model.errors import EngineError, ImageNotFound
from patrd.model.instances import (
    ContainerState,
    EngineEvent,
    ImageResult,
    Instance,
    InstanceSpec,
    NetworkInfo,
    ProgressCallback,
    RegistryAuth,
    VolumeInfo,
)


@dataclass
class FakeContainer:
    spec: InstanceSpec
    container_id: str
    state: ContainerState = ContainerState.CREATED
    ip: str | None = None
    exit_code: int | None = None
    starts: int = 0
    listener: asyncio.Server | None = None

    def instance(self) -> Instance:
        s = self.spec
        return Instance(
            container_id=self.container_id,
            container_name=s.container_name,
            deployment_id=s.deployment_id,
            deployment=s.deployment,
            revision=s.revision,
            slot=s.slot,
            state=self.state,
            ip=self.ip,
            exit_code=self.exit_code,
            template=s.template,
        )


@dataclass
class FakeEngine:
    port: int
    fail_start: set[str] = field(default_factory=set)
    crash: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    stale_task: set[str] = field(default_factory=set)  # container ids
    away: set[str] = field(default_factory=set)  # container ids
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    networks: dict[str, NetworkInfo] = field(default_factory=dict)
    volumes: dict[str, VolumeInfo] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)  # monotonic, every start attempt
    _queue: asyncio.Queue[EngineEvent] = field(default_factory=asyncio.Queue)
    _octet: int = field(default_factory=lambda: 1 + secrets.randbelow(250))
    _ips: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _refs: dict[str, str] = field(default_factory=dict)  # image id -> the ref it came from

    # --- what tests look at ---------------------------------------------------

    def running(self, deployment: str) -> list[FakeContainer]:
        return sorted(
            (
                c
                for c in self.containers.values()
                if c.spec.deployment == deployment and c.state is ContainerState.RUNNING
            ),
            key=lambda c: c.spec.slot,
        )

    def count(self, call: str) -> int:
        return sum(1 for name, _ in self.calls if name == call)

    async def kill(self, container_id: str, exit_code: int = 137) -> None:
        """The container dies under patrd (OOM, a crash, docker kill)."""
        await self._exit(self.containers[container_id], exit_code)

    async def deafen(self, container_id: str) -> None:
        """Still running, but its port no longer answers (a slow start, a hang)."""
        await self._close(self.containers[container_id])

    async def listen(self, container_id: str) -> None:
        c = self.containers[container_id]
        assert c.ip is not None and c.listener is None
        c.listener = await asyncio.start_server(_hang_up, c.ip, self.port)

    # --- the Engine protocol --------------------------------------------------

    async def ping(self) -> str:
        return "fake"

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return [
            c.instance()
            for c in self.containers.values()
            if deployment_id is None or c.spec.deployment_id == deployment_id
        ]

    async def list_networks(self) -> list[NetworkInfo]:
        return list(self.networks.values())

    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None:
        self.calls.append(("ensure_network", name))
        self.networks.setdefault(name, NetworkInfo(name=name, deployment_id=deployment_id))

    async def remove_network(self, name: str) -> None:
        self.calls.append(("remove_network", name))
        self.networks.pop(name, None)

    async def ensure_image(
        self,
        ref: str,
        *,
        always_pull: bool,
        progress: ProgressCallback | None = None,
        auth: RegistryAuth | None = None,
        refuse_pull: str = "",
    ) -> ImageResult:
        self.calls.append(("ensure_image", ref))
        if ref in self.missing:
            raise ImageNotFound(f"image {ref} not found")
        image_id = _image_id(ref)
        self._refs[image_id] = ref
        return ImageResult(image_id=image_id, pulled=False, warning=None)

    async def create_instance(self, spec: InstanceSpec) -> str:
        self.calls.append(("create_instance", spec.container_name))
        if any(c.spec.container_name == spec.container_name for c in self.containers.values()):
            raise EngineError(f"container name {spec.container_name} in use")
        cid = secrets.token_hex(32)
        self.containers[cid] = FakeContainer(spec=spec, container_id=cid)
        return cid

    async def remote_digest(self, ref: str, auth: RegistryAuth | None = None) -> str:
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    async def repo_digests(self, image: str) -> list[str]:
        return []

    async def start(self, container_id: str) -> None:
        self.calls.append(("start", container_id))
        self.started_at.append(time.monotonic())
        c = self._get(container_id)
        if container_id in self.stale_task:
            raise EngineError(
                f"start {container_id[:12]}: failed to create task for container: "
                f"task {container_id}: already exists: unknown"
            )
        if container_id in self.away:
            raise EngineError(f"start {container_id[:12]}: Docker unreachable: [Errno 2]")
        ref = self._refs.get(c.spec.image, c.spec.image)
        if ref in self.fail_start:
            raise EngineError(f"start {c.spec.container_name}: exec format error")
        c.starts += 1
        c.state = ContainerState.RUNNING
        c.exit_code = None
        if c.ip is None:
            c.ip = f"127.77.{self._octet}.{next(self._ips)}"
        self._emit(c, "start")
        if ref in self.crash:
            await self._exit(c, 1)
            return
        c.listener = await asyncio.start_server(_hang_up, c.ip, self.port)

    async def remove(self, container_id: str, stop_timeout_s: int) -> None:
        self.calls.append(("remove", container_id))
        c = self.containers.get(container_id)
        if c is None:
            return
        await self._close(c)
        del self.containers[container_id]
        self._emit(c, "destroy")

    async def restart(self, container_id: str, stop_timeout_s: int) -> None:
        self.calls.append(("restart", container_id))
        c = self._get(container_id)
        await self._close(c)
        c.state = ContainerState.EXITED
        await self.start(container_id)

    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str:
        self.calls.append(("ensure_volume", name))
        self.volumes.setdefault(
            name,
            VolumeInfo(
                name=name,
                deployment=deployment,
                volume=volume,
                slot=slot,
                mountpoint=f"/fake/volumes/{name}",
            ),
        )
        return name

    async def list_volumes(self, deployment: str) -> list[VolumeInfo]:
        return [v for v in self.volumes.values() if v.deployment == deployment]

    async def remove_volume(self, name: str) -> None:
        self.calls.append(("remove_volume", name))
        if any(name in dict(c.spec.volumes) for c in self.containers.values()):
            raise EngineError(f"volume {name} is in use")
        self.volumes.pop(name, None)

    async def events(self) -> AsyncIterator[EngineEvent]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        for c in self.containers.values():
            await self._close(c)

    # --- inside ---------------------------------------------------------------

    def _get(self, container_id: str) -> FakeContainer:
        c = self.containers.get(container_id)
        if c is None:
            raise EngineError(f"no such container {container_id[:12]}")
        return c

    async def _exit(self, c: FakeContainer, code: int) -> None:
        await self._close(c)
        c.state = ContainerState.EXITED
        c.exit_code = code
        c.ip = None
        self._emit(c, "die")

    async def _close(self, c: FakeContainer) -> None:
        if c.listener is not None:
            c.listener.close()
            await c.listener.wait_closed()
            c.listener = None

    def _emit(self, c: FakeContainer, action: str) -> None:
        self._queue.put_nowait(
            EngineEvent(
                deployment_id=c.spec.deployment_id,
                container_id=c.container_id,
                action=action,
                time_ns=0,
            )
        )


def _image_id(ref: str) -> str:
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
