"""The engine adapter: everything patrd asks of Docker goes through here.

Controllers speak of instances and networks; this module turns that into
Docker Engine API calls over aiodocker and is the only place that sees
aiodocker's errors (they leave as ``EngineError``). A second adapter (Swarm)
would implement the same ``Engine`` protocol.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

import aiodocker
import aiohttp
import structlog
from aiodocker.stream import Stream

from patrd.engine.hardening import Hardening, host_config, refuse_docker_socket
from patrd.engine.subnets import pick_subnet
from patrd.model.errors import EngineError, ImageNotFound, PullRefused

LABEL_MANAGED = "patrd.managed"
LABEL_OWNER = "patrd.owner"
LABEL_DEPLOYMENT = "patrd.deployment"
LABEL_DEPLOYMENT_ID = "patrd.deployment-id"
LABEL_REVISION = "patrd.revision"
LABEL_INSTANCE = "patrd.instance"
LABEL_TEMPLATE = "patrd.template"
LABEL_VOLUME = "patrd.volume"
# A one-off container (``patrctl run``, a scheduled job run): it carries no
# instance label, so the reconciler never adopts, restarts or collects it.
LABEL_ONEOFF = "patrd.oneoff"

_EXIT_CODE_RE = re.compile(r"Exited \((-?\d+)\)")

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
    volumes: tuple[tuple[str, str], ...] = ()  # (Docker volume name, mount path)
    extra_capabilities: tuple[str, ...] = ()  # the deployment's explicit `security` field
    pids_limit: int | None = None  # None: the node's default


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
    output: bytes  # stdout and stderr interleaved, at most EXEC_OUTPUT_CAP bytes


EXEC_OUTPUT_CAP = 64 * 1024


@dataclass(frozen=True, slots=True)
class EngineEvent:
    deployment_id: str
    container_id: str
    action: str
    time_ns: int


class Engine(Protocol):
    async def ping(self) -> str: ...
    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]: ...
    async def list_networks(self) -> list[NetworkInfo]: ...
    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None: ...
    async def remove_network(self, name: str) -> None: ...
    async def ensure_image(
        self,
        ref: str,
        *,
        always_pull: bool,
        progress: ProgressCallback | None = None,
        auth: RegistryAuth | None = None,
        refuse_pull: str = "",
    ) -> ImageResult: ...
    async def create_instance(self, spec: InstanceSpec) -> str: ...
    async def remote_digest(self, ref: str, auth: RegistryAuth | None = None) -> str: ...
    async def repo_digests(self, image: str) -> list[str]: ...
    async def start(self, container_id: str) -> None: ...
    async def remove(self, container_id: str, stop_timeout_s: int) -> None: ...
    async def restart(self, container_id: str, stop_timeout_s: int) -> None: ...
    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str: ...
    async def list_volumes(self, deployment: str) -> list[VolumeInfo]: ...
    async def remove_volume(self, name: str) -> None: ...
    def events(self) -> AsyncIterator[EngineEvent]: ...
    async def close(self) -> None: ...


class DockerEngine:
    """``Engine`` over the local Docker daemon; the API version is negotiated."""

    def __init__(
        self,
        url: str,
        owner: str,
        hardening: Hardening | None = None,
        network_pool: tuple[str, int] = ("", 24),
    ) -> None:
        self._url = url
        self._owner = owner
        self._network_pool = network_pool
        self._hardening = hardening if hardening is not None else Hardening()
        self._docker: aiodocker.Docker | None = None
        # Subnets are picked and taken one network at a time: deployments
        # created together would otherwise all pick the same first free one.
        self._network_lock = asyncio.Lock()
        self._log = structlog.get_logger("patrd.engine.docker")

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = _client(self._url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            if not self._docker.connector.closed:
                await self._docker.connector.close()
            self._docker = None

    async def ping(self) -> str:
        async with _translate("ping"):
            info = await self.docker.version()
        return f"{info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        labels = [f"{LABEL_OWNER}={self._owner}"]
        if deployment_id:
            labels.append(f"{LABEL_DEPLOYMENT_ID}={deployment_id}")
        async with _translate("list containers"):
            containers = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": labels})
            )
        instances = []
        for container in containers:
            instance = _instance_from_summary(container._container)
            if instance is not None:
                instances.append(instance)
        return instances

    async def list_networks(self) -> list[NetworkInfo]:
        async with _translate("list networks"):
            networks = await self.docker.networks.list(
                filters={"label": [f"{LABEL_OWNER}={self._owner}"]}
            )
        return [
            NetworkInfo(
                name=n["Name"],
                deployment_id=(n.get("Labels") or {}).get(LABEL_DEPLOYMENT_ID, ""),
                bridge=_bridge_name(n),
            )
            for n in networks
        ]

    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None:
        async with _translate(f"inspect network {name}"):
            existing = await self.docker.networks.list(filters={"name": [name]})
        if any(n["Name"] == name for n in existing):
            return
        config = {
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Labels": {
                LABEL_MANAGED: "1",
                LABEL_OWNER: self._owner,
                LABEL_DEPLOYMENT: deployment,
                LABEL_DEPLOYMENT_ID: deployment_id,
            },
        }
        async with self._network_lock:
            await self._create_network(name, config)

    async def _create_network(self, name: str, config: dict[str, Any]) -> None:
        pool, prefix = self._network_pool
        tried: list[str] = []
        for _ in range(8):  # another network may take the subnet we picked meanwhile
            if pool:
                subnet = pick_subnet(pool, prefix, [*await self._subnets_in_use(), *tried])
                if subnet is None:
                    raise EngineError(
                        f"create network {name}: docker.network_pool {pool} has no free "
                        f"/{prefix} left; enlarge it or delete unused deployments"
                    )
                tried.append(subnet)
                config["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
            try:
                await self.docker.networks.create(config)
                return
            except aiodocker.DockerError as exc:
                if exc.status == 409:  # created concurrently
                    return
                if pool and "overlap" in exc.message.lower():
                    continue
                raise EngineError(f"create network {name}: {exc.message}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise EngineError(f"create network {name}: Docker unreachable: {exc}") from exc
        raise EngineError(f"create network {name}: no free subnet after {len(tried)} tries")

    async def _subnets_in_use(self) -> list[str]:
        async with _translate("list networks"):
            networks = await self.docker.networks.list()
        return [
            str(c["Subnet"])
            for n in networks
            for c in ((n.get("IPAM") or {}).get("Config") or [])
            if c.get("Subnet")
        ]

    async def remove_network(self, name: str) -> None:
        try:
            network = await self.docker.networks.get(name)
            await network.delete()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            raise EngineError(f"remove network {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove network {name}: Docker unreachable: {exc}") from exc

    async def ensure_image(
        self,
        ref: str,
        *,
        always_pull: bool,
        progress: ProgressCallback | None = None,
        auth: RegistryAuth | None = None,
        refuse_pull: str = "",
    ) -> ImageResult:
        """The local image id of ``ref``, pulled if missing (or always, ``always_pull``).

        ``refuse_pull``: a pull would be needed but must not happen (the disk
        guard's reason): a local copy is used with a warning, else
        ``PullRefused``. ``fresh``: the pull brought an image id that was not
        here under ``ref`` before (patrd may collect it later, patrd/engine/imagegc.py).
        """
        local = await self._inspect_image(ref)
        if local is not None and not always_pull:
            return ImageResult(image_id=local, pulled=False, warning=None)
        if refuse_pull:
            if local is not None:
                return ImageResult(image_id=local, pulled=False, warning=refuse_pull)
            raise PullRefused(refuse_pull)
        if local is None and ref.startswith("sha256:"):
            raise ImageNotFound(f"image {ref[:19]} is not on this node (an id cannot be pulled)")
        try:
            await self._pull(ref, progress, auth)
        except EngineError as exc:
            if local is not None:
                return ImageResult(image_id=local, pulled=False, warning=f"{exc}; using local copy")
            raise ImageNotFound(str(exc)) from exc
        pulled = await self._inspect_image(ref)
        if pulled is None:
            raise ImageNotFound(f"image {ref} not present after pull")
        return ImageResult(image_id=pulled, pulled=True, warning=None, fresh=pulled != local)

    async def remote_digest(self, ref: str, auth: RegistryAuth | None = None) -> str:
        """The registry's manifest digest for ``ref``, without pulling (Docker asks it)."""
        headers = {}
        if auth is not None:
            payload = json.dumps(
                {"username": auth.username, "password": auth.password, "serveraddress": auth.server}
            )
            headers["X-Registry-Auth"] = base64.urlsafe_b64encode(payload.encode()).decode()
        async with _translate(f"distribution {ref}"):
            data = await self.docker._query_json(f"distribution/{ref}/json", headers=headers)
        digest = (data.get("Descriptor") or {}).get("digest")
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise EngineError(f"distribution {ref}: no digest in the answer")
        return digest

    async def repo_digests(self, image: str) -> list[str]:
        """``repo@sha256:…`` names the registry knows this local image by."""
        async with _translate(f"inspect image {image}"):
            info = await self.docker.images.inspect(image)
        return [str(d) for d in info.get("RepoDigests") or []]

    # --- image garbage collection and the disk guard (patrd/engine/imagegc.py, diskguard.py) ---

    async def data_root(self) -> str:
        """Where Docker keeps images and volumes (``DockerRootDir``)."""
        async with _translate("info"):
            info = await self.docker.system.info()
        return str(info.get("DockerRootDir") or "/var/lib/docker")

    async def images_in_use(self) -> set[str]:
        """Image ids of every container on the engine, patrd's or not, running or not."""
        async with _translate("list containers"):
            containers = await self.docker.containers.list(all=True)
        return {str(c._container.get("ImageID", "")) for c in containers} - {""}

    async def image_exists(self, image_id: str) -> bool:
        return await self._inspect_image(image_id) is not None

    async def remove_image(self, image_id: str) -> str:
        """Remove an image by id (never forced): "removed", "gone", or why it stays."""
        try:
            await self.docker._query_json(
                f"images/{image_id}", method="DELETE", params={"force": "false", "noprune": "false"}
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return "gone"
            if exc.status == 409:  # used by a container, or tagged in other repositories
                return exc.message
            raise EngineError(f"remove image {image_id[:19]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove image {image_id[:19]}: Docker unreachable: {exc}") from exc
        return "removed"

    async def exposed_ports(self, ref: str) -> list[str] | None:
        """The image's ``ExposedPorts`` (``80/tcp``), pulling it if missing; None if no image."""
        try:
            await self.ensure_image(ref, always_pull=False)
        except EngineError:
            return None
        async with _translate(f"inspect image {ref}"):
            info = await self.docker.images.inspect(ref)
        exposed = (info.get("Config") or {}).get("ExposedPorts") or {}
        return [str(port) for port in exposed]

    async def _inspect_image(self, ref: str) -> str | None:
        try:
            info = await self.docker.images.inspect(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise EngineError(f"inspect image {ref}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"inspect image {ref}: Docker unreachable: {exc}") from exc
        return str(info["Id"])

    async def _pull(
        self, ref: str, progress: ProgressCallback | None, auth: RegistryAuth | None
    ) -> None:
        last_report = 0.0
        credentials = None
        if auth is not None:  # sent as X-Registry-Auth; never logged
            credentials = {
                "username": auth.username,
                "password": auth.password,
                "serveraddress": auth.server,
            }
        try:
            async for item in self.docker.images.pull(ref, stream=True, auth=credentials):
                if "error" in item:
                    raise EngineError(f"pull {ref}: {item['error']}")
                now = time.monotonic()
                if progress is not None and (now - last_report > 1.0 or "Status:" in str(item)):
                    last_report = now
                    await progress(_progress_line(item))
        except aiodocker.DockerError as exc:
            raise EngineError(f"pull {ref}: {exc.message}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"pull {ref}: {exc!r}") from exc

    async def create_instance(self, spec: InstanceSpec) -> str:
        return await self._create(spec.container_name, self._container_config(spec))

    async def create_oneoff(self, spec: InstanceSpec, command: tuple[str, ...], run: str) -> str:
        """A one-off container made like an instance of ``spec``, running ``command``.

        Labelled ``patrd.oneoff=<run>`` instead of ``patrd.instance``; no DNS
        alias on the deployment's network (the instances' names stay theirs).
        """
        config = self._container_config(spec)
        labels = config["Labels"]
        labels.pop(LABEL_INSTANCE, None)
        labels[LABEL_ONEOFF] = run
        config["Cmd"] = list(command)
        config["NetworkingConfig"] = {"EndpointsConfig": {spec.network: {}}}
        return await self._create(spec.container_name, config)

    def _container_config(self, spec: InstanceSpec) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Image": spec.image,
            "Hostname": spec.hostname,
            "Env": [f"{k}={v}" for k, v in spec.env],
            "Labels": {
                LABEL_MANAGED: "1",
                LABEL_OWNER: self._owner,
                LABEL_DEPLOYMENT: spec.deployment,
                LABEL_DEPLOYMENT_ID: spec.deployment_id,
                LABEL_REVISION: str(spec.revision),
                LABEL_INSTANCE: str(spec.slot),
                LABEL_TEMPLATE: spec.template,
            },
            "StopTimeout": spec.stop_timeout_s,
            "HostConfig": {
                # An init as PID 1 forwards SIGTERM: stop takes ~0.09 s, not the timeout.
                "Init": True,
                "NetworkMode": spec.network,
                "NanoCpus": int(spec.cpu * 1e9),
                "Memory": spec.memory_mb * 1024 * 1024,
                # patrd restarts crashed instances itself (with backoff and events);
                # a Docker restart policy would fight the reconciler.
                "RestartPolicy": {"Name": "no"},
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
                # Capabilities, no-new-privileges, pids limit (patrd/engine/hardening.py).
                **host_config(
                    replace(
                        self._hardening,
                        capabilities=tuple(
                            sorted({*self._hardening.capabilities, *spec.extra_capabilities})
                        ),
                        pids_limit=self._hardening.pids_limit
                        if spec.pids_limit is None
                        else spec.pids_limit,
                    )
                ),
                "Mounts": _mounts(spec),
            },
            "NetworkingConfig": {
                "EndpointsConfig": {spec.network: {"Aliases": [spec.hostname]}},
            },
        }
        return config

    async def _create(self, name: str, config: dict[str, Any]) -> str:
        try:
            refuse_docker_socket(config["HostConfig"])
        except ValueError as exc:
            raise EngineError(f"create {name}: {exc}") from None
        try:
            container = await self.docker.containers.create(config, name=name)
        except aiodocker.DockerError as exc:
            if exc.status == 409:
                return await self._existing_id(name)
            if exc.status == 404:
                raise ImageNotFound(f"create {name}: {exc.message}") from exc
            raise EngineError(f"create {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"create {name}: Docker unreachable: {exc}") from exc
        return str(container.id)

    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str:
        """The Docker volume of one instance's volume: its name (idempotent).

        An existing volume called ``name`` is used only if its labels say it
        is this deployment's ``volume`` of ``slot``; anything else is refused,
        never shared. ``adopt``: an older name the volume may have (see
        patrd/model/naming.py); it is used as it is when its labels match.
        """
        labels = {
            LABEL_MANAGED: "1",
            LABEL_OWNER: self._owner,
            LABEL_DEPLOYMENT: deployment,
            LABEL_VOLUME: volume,
            LABEL_INSTANCE: str(slot),
        }
        existing = await self._volume_labels(name)
        if existing is not None:
            mismatch = sorted(k for k, v in labels.items() if existing.get(k) != v)
            if mismatch:
                raise EngineError(
                    f"volume {name} exists but is not {deployment}'s {volume} of instance "
                    f"{slot} (labels {', '.join(mismatch)} differ); refusing to use it"
                )
            return name
        if adopt:
            older = await self._volume_labels(adopt)
            if older is not None and all(older.get(k) == v for k, v in labels.items()):
                self._log.info("volume_adopted", volume=adopt, deployment=deployment)
                return adopt
        config = {"Name": name, "Driver": "local", "Labels": labels}
        async with _translate(f"create volume {name}"):
            await self.docker._query_json("volumes/create", method="POST", data=json.dumps(config))
        return name

    async def _volume_labels(self, name: str) -> dict[str, str] | None:
        try:
            data = await self.docker._query_json(f"volumes/{name}")
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise EngineError(f"inspect volume {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"inspect volume {name}: Docker unreachable: {exc}") from exc
        return {str(k): str(v) for k, v in (data.get("Labels") or {}).items()}

    async def list_volumes(self, deployment: str) -> list[VolumeInfo]:
        filters = json.dumps(
            {"label": [f"{LABEL_OWNER}={self._owner}", f"{LABEL_DEPLOYMENT}={deployment}"]}
        )
        async with _translate("list volumes"):
            data = await self.docker._query_json("volumes", params={"filters": filters})
        found = []
        for item in data.get("Volumes") or []:
            labels = item.get("Labels") or {}
            try:
                slot = int(labels[LABEL_INSTANCE])
            except (KeyError, ValueError):
                continue
            found.append(
                VolumeInfo(
                    name=item["Name"],
                    deployment=labels.get(LABEL_DEPLOYMENT, ""),
                    volume=labels.get(LABEL_VOLUME, ""),
                    slot=slot,
                    mountpoint=item.get("Mountpoint", ""),
                )
            )
        return sorted(found, key=lambda v: (v.volume, v.slot))

    async def remove_volume(self, name: str) -> None:
        try:
            await self.docker._query_json(f"volumes/{name}", method="DELETE")
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            raise EngineError(f"remove volume {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove volume {name}: Docker unreachable: {exc}") from exc

    async def _existing_id(self, name: str) -> str:
        async with _translate(f"inspect {name}"):
            info = await self.docker.containers.get(name)
        labels = info["Config"].get("Labels") or {}
        if LABEL_MANAGED not in labels:
            raise EngineError(f"container name {name} is taken by a container patrd did not create")
        return str(info.id)

    async def start(self, container_id: str) -> None:
        async with _translate(f"start {container_id[:12]}"):
            await self.docker.containers.container(container_id).start()

    async def restart(self, container_id: str, stop_timeout_s: int) -> None:
        async with _translate(f"restart {container_id[:12]}"):
            await self.docker.containers.container(container_id).restart(t=stop_timeout_s)

    async def remove(self, container_id: str, stop_timeout_s: int) -> None:
        container = self.docker.containers.container(container_id)
        try:
            await container.stop(t=stop_timeout_s)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            if exc.status != 304:  # 304: already stopped
                raise EngineError(f"stop {container_id[:12]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"stop {container_id[:12]}: Docker unreachable: {exc}") from exc
        try:
            await container.delete(force=True, v=True)
        except aiodocker.DockerError as exc:
            if exc.status in (404, 409):  # gone, or removal already in progress
                return
            raise EngineError(f"remove {container_id[:12]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove {container_id[:12]}: Docker unreachable: {exc}") from exc

    # --- logs, stats, stop (issue 7: patrd/observe/logs.py, patrd/observe/metrics.py) ----------

    async def logs(
        self,
        container_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """(stream, line) frames of a container's log, each line prefixed by its timestamp.

        Docker's multiplexed format (no TTY): an 8-byte header per frame
        (stream 1 stdout / 2 stderr, 3 zero bytes, big-endian length).
        ``follow`` ends when the container stops.
        """
        params = {
            "stdout": "1",
            "stderr": "1",
            "timestamps": "1",
            "follow": "1" if follow else "0",
            "tail": "all" if tail is None else str(tail),
        }
        if since is not None:
            params["since"] = f"{since:.9f}"
        if until is not None:
            params["until"] = f"{until:.9f}"
        timeout = aiohttp.ClientTimeout(total=None if follow else 120, sock_connect=10)
        buf = bytearray()
        try:
            async with self.docker._query(
                f"containers/{container_id}/logs", method="GET", params=params, timeout=timeout
            ) as response:
                async for chunk in response.content.iter_any():
                    buf += chunk
                    pos = 0
                    while len(buf) - pos >= 8:
                        size = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                        if len(buf) - pos < 8 + size:
                            break
                        kind = "stderr" if buf[pos] == 2 else "stdout"
                        yield kind, bytes(buf[pos + 8 : pos + 8 + size])
                        pos += 8 + size
                    del buf[:pos]
        except aiodocker.DockerError as exc:
            raise EngineError(f"logs {container_id[:12]}: {exc.message}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"logs {container_id[:12]}: {exc!r}") from exc

    async def stats(self, container_id: str) -> dict[str, Any]:
        """One reading of Docker's stats endpoint (``one-shot``: no 1 s second sample)."""
        async with _translate(f"stats {container_id[:12]}"):
            data = await self.docker._query_json(
                f"containers/{container_id}/stats",
                params={"stream": "false", "one-shot": "true"},
            )
        return dict(data) if isinstance(data, dict) else {}

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        """Stop (SIGTERM, then SIGKILL after the timeout); gone or stopped already is fine."""
        try:
            await self.docker.containers.container(container_id).stop(t=stop_timeout_s)
        except aiodocker.DockerError as exc:
            if exc.status not in (304, 404):
                raise EngineError(f"stop {container_id[:12]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"stop {container_id[:12]}: Docker unreachable: {exc}") from exc

    async def exec(self, container_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        """Run ``argv`` in a running container and wait for it (backup hooks).

        A missing program is exit code 126/127 with the reason in the output,
        not an error; ``EngineError`` when Docker refuses or the timeout passes.
        """
        what = f"exec in {container_id[:12]}"
        output = bytearray()
        try:
            async with asyncio.timeout(timeout_s), _translate(what):
                container = self.docker.containers.container(container_id)
                run = await container.exec(list(argv), stdout=True, stderr=True)
                async with run.start(detach=False) as stream:
                    while (message := await stream.read_out()) is not None:
                        output += message.data[: max(0, EXEC_OUTPUT_CAP - len(output))]
                info = await run.inspect()
        except TimeoutError:
            raise EngineError(f"{what}: no exit within {timeout_s:g} s") from None
        code = info.get("ExitCode")
        return ExecResult(exit_code=-1 if code is None else int(code), output=bytes(output))

    # --- one-off containers and exec (patrd/run/oneoff.py, patrd/api/exec.py) ------------

    async def wait(self, container_id: str) -> int:
        """Block until the container exits; its exit code."""
        async with _translate(f"wait {container_id[:12]}"):
            data = await self.docker._query_json(
                f"containers/{container_id}/wait",
                method="POST",
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return int(data.get("StatusCode", -1))

    async def list_oneoffs(self) -> list[OneOff]:
        """patrd's one-off containers, in any state."""
        labels = [f"{LABEL_OWNER}={self._owner}", LABEL_ONEOFF]
        async with _translate("list containers"):
            containers = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": labels})
            )
        found = []
        for container in containers:
            summary = container._container
            labels_of = summary.get("Labels") or {}
            found.append(
                OneOff(
                    container_id=str(summary["Id"]),
                    deployment_id=str(labels_of.get(LABEL_DEPLOYMENT_ID, "")),
                    run=str(labels_of.get(LABEL_ONEOFF, "")),
                    running=summary.get("State") == "running",
                    started=summary.get("State") != "created",
                )
            )
        return found

    async def exec_create(
        self, container_id: str, command: tuple[str, ...], *, tty: bool, stdin: bool
    ) -> str:
        """Create (not start) an exec of ``command`` in a running container; its id."""
        body = {
            "Cmd": list(command),
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
        }
        if tty:
            body["Env"] = ["TERM=xterm"]
        async with _translate(f"exec in {container_id[:12]}"):
            data = await self.docker._query_json(
                f"containers/{container_id}/exec", method="POST", data=json.dumps(body)
            )
        return str(data["Id"])

    async def exec_start(self, exec_id: str) -> ExecStream:
        """Start a created exec, attached: output, stdin and resize through the stream."""
        stream = self.docker.containers.exec(exec_id).start(detach=False)
        async with _translate(f"exec start {exec_id[:12]}"):
            await stream._init()
        return ExecStream(self.docker, exec_id, stream)

    # --- events ------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[EngineEvent]:
        """Container events of patrd's containers until the stream ends (then reconnect)."""
        filters = json.dumps({"type": ["container"], "label": [f"{LABEL_OWNER}={self._owner}"]})
        params = {"filters": filters, "since": str(int(time.time()))}
        try:
            async with self.docker._query(
                "events", method="GET", params=params, timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                try:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = _event_from_json(json.loads(line))
                        if event is not None:
                            yield event
                finally:
                    response.close()  # aiodocker leaves it open: a broken stream leaked
        except aiodocker.DockerError as exc:
            raise EngineError(f"events: {exc.message}") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise EngineError(f"events stream broke: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class OneOff:
    container_id: str
    deployment_id: str
    run: str  # the ``patrd.oneoff`` label: who started it (a run id, a job run)
    running: bool
    started: bool = True  # False: created, never started


class ExecStream:
    """One attached exec: read output, write stdin, half-close, resize, exit code.

    Without a TTY the output comes demultiplexed (1 stdout, 2 stderr); with
    one it is a single stream (1).
    """

    def __init__(self, docker: aiodocker.Docker, exec_id: str, stream: Stream) -> None:
        self._docker = docker
        self._id = exec_id
        self._stream = stream

    async def read(self) -> tuple[int, bytes] | None:
        """The next chunk of output, or None at the end."""
        async with _translate(f"exec read {self._id[:12]}"):
            message = await self._stream.read_out()
        return None if message is None else (message.stream, message.data)

    async def write(self, data: bytes) -> None:
        async with _translate(f"exec write {self._id[:12]}"):
            await self._stream.write_in(data)

    def close_stdin(self) -> None:
        """EOF on the command's stdin; output keeps coming."""
        response = self._stream._resp
        connection = None if response is None else response.connection
        transport = None if connection is None else connection.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()

    async def resize(self, rows: int, cols: int) -> None:
        async with _translate(f"exec resize {self._id[:12]}"):
            await self._docker.containers.exec(self._id).resize(h=rows, w=cols)

    async def exit_code(self) -> int | None:
        async with _translate(f"exec inspect {self._id[:12]}"):
            info = await self._docker._query_json(f"exec/{self._id}/json")
        code = info.get("ExitCode")
        return None if code is None else int(code)

    async def close(self) -> None:
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
            await self._stream.close()


def _client(url: str) -> aiodocker.Docker:
    """An API client that opens a fresh connection per request on a unix socket.

    dockerd, told to stop, unlinks its socket and then stops its containers,
    but keeps serving connections that are already open: over a kept-alive one
    a ``start`` sent on the container's ``die`` event runs inside a half shut
    down engine and leaves stale state behind (a network endpoint, a
    containerd task: "task ... already exists" after the restart). A fresh
    connection fails at once instead ("Cannot connect"), which is the truth.
    A connect on a unix socket costs microseconds (docs/design.md,
    "Starts that fail because of the engine").
    """
    if url.startswith("unix://"):
        connector = aiohttp.UnixConnector(url.removeprefix("unix://"), force_close=True)
        return aiodocker.Docker(url="unix://localhost", connector=connector)
    return aiodocker.Docker(url=url)


class _translate:
    """``async with _translate("what")``: aiodocker/aiohttp errors → EngineError."""

    def __init__(self, what: str) -> None:
        self._what = what

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, aiodocker.DockerError):
            raise EngineError(f"{self._what}: {exc.message}") from exc
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise EngineError(f"{self._what}: Docker unreachable: {exc}") from exc
        return False


def _mounts(spec: InstanceSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"Type": "volume", "Source": name, "Target": path} for name, path in spec.volumes
    ]
    if spec.config_dir is not None:
        # A directory, not single files: an atomic rename inside it is seen live.
        mounts.append(
            {"Type": "bind", "Source": spec.config_dir, "Target": "/etc/config", "ReadOnly": True}
        )
    return mounts


def _instance_from_summary(summary: dict[str, Any]) -> Instance | None:
    labels = summary.get("Labels") or {}
    try:
        revision = int(labels[LABEL_REVISION])
        slot = int(labels[LABEL_INSTANCE])
        deployment_id = labels[LABEL_DEPLOYMENT_ID]
        deployment = labels[LABEL_DEPLOYMENT]
    except (KeyError, ValueError):
        return None
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
    try:
        state = ContainerState(summary.get("State", "dead"))
    except ValueError:
        state = ContainerState.DEAD
    match = _EXIT_CODE_RE.search(summary.get("Status", ""))
    names = summary.get("Names") or [""]
    return Instance(
        container_id=summary["Id"],
        container_name=names[0].lstrip("/"),
        deployment_id=deployment_id,
        deployment=deployment,
        revision=revision,
        slot=slot,
        state=state,
        ip=ip or None,
        exit_code=int(match.group(1)) if match else None,
        template=labels.get(LABEL_TEMPLATE, ""),
    )


def _bridge_name(network: dict[str, Any]) -> str:
    """The Linux interface of a bridge network: its option, else Docker's ``br-<id[:12]>``."""
    if network.get("Driver") != "bridge":
        return ""
    options = network.get("Options") or {}
    return str(options.get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}")


def _event_from_json(data: dict[str, Any]) -> EngineEvent | None:
    actor = data.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    deployment_id = attributes.get(LABEL_DEPLOYMENT_ID)
    if not deployment_id:
        return None
    return EngineEvent(
        deployment_id=deployment_id,
        container_id=actor.get("ID", ""),
        action=str(data.get("Action", "")),
        time_ns=int(data.get("timeNano", 0)),
    )


def _progress_line(item: dict[str, Any]) -> str:
    parts = [str(item.get(k)) for k in ("id", "status", "progress") if item.get(k)]
    return " ".join(parts)[:200]


def is_pinned_tag(tag: str) -> bool:
    """Pull policy: ``latest`` is always pulled, any other tag only when missing."""
    return tag != "latest"
