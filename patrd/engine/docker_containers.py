"""Docker containers: patrd's instances and one-offs, their lifecycle and their events."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiodocker
import aiohttp

from patrd.engine.docker_base import DockerBase, translate
from patrd.engine.hardening import host_config, refuse_docker_socket
from patrd.engine.labels import (
    LABEL_DEPLOYMENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_ONEOFF,
    LABEL_OWNER,
    LABEL_REVISION,
    LABEL_TEMPLATE,
    instance_labels,
)
from patrd.model.errors import EngineError, ImageNotFound
from patrd.model.instances import ContainerState, EngineEvent, Instance, InstanceSpec, OneOff

_EXIT_CODE_RE = re.compile(r"Exited \((-?\d+)\)")


class DockerContainers(DockerBase):
    """patrd's containers (by the owner label): instances, one-offs, their events."""

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        labels = [f"{LABEL_OWNER}={self._owner}"]
        if deployment_id:
            labels.append(f"{LABEL_DEPLOYMENT_ID}={deployment_id}")
        async with translate("list containers"):
            containers = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": labels})
            )
        instances = []
        for container in containers:
            instance = instance_from_summary(container._container)
            if instance is not None:
                instances.append(instance)
        return instances

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
                **instance_labels(
                    self._owner,
                    spec.deployment,
                    spec.deployment_id,
                    spec.revision,
                    spec.slot,
                    spec.template,
                ),
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

    async def _existing_id(self, name: str) -> str:
        async with translate(f"inspect {name}"):
            info = await self.docker.containers.get(name)
        labels = info["Config"].get("Labels") or {}
        if LABEL_MANAGED not in labels:
            raise EngineError(f"container name {name} is taken by a container patrd did not create")
        return str(info.id)

    async def start(self, container_id: str) -> None:
        async with translate(f"start {container_id[:12]}"):
            await self.docker.containers.container(container_id).start()

    async def restart(self, container_id: str, stop_timeout_s: int) -> None:
        async with translate(f"restart {container_id[:12]}"):
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

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        """Stop (SIGTERM, then SIGKILL after the timeout); gone or stopped already is fine."""
        try:
            await self.docker.containers.container(container_id).stop(t=stop_timeout_s)
        except aiodocker.DockerError as exc:
            if exc.status not in (304, 404):
                raise EngineError(f"stop {container_id[:12]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"stop {container_id[:12]}: Docker unreachable: {exc}") from exc

    # --- one-off containers (patrd/run/oneoff.py, patrd/run/jobs.py) --------------------

    async def wait(self, container_id: str) -> int:
        """Block until the container exits; its exit code."""
        async with translate(f"wait {container_id[:12]}"):
            data = await self.docker._query_json(
                f"containers/{container_id}/wait",
                method="POST",
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return int(data.get("StatusCode", -1))

    async def list_oneoffs(self) -> list[OneOff]:
        """patrd's one-off containers, in any state."""
        labels = [f"{LABEL_OWNER}={self._owner}", LABEL_ONEOFF]
        async with translate("list containers"):
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


def instance_from_summary(summary: dict[str, Any]) -> Instance | None:
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
