"""A deployment's config files on a swarm: Swarm configs, on every node.

On the docker backend the files are a host directory bind-mounted read-only
at /etc/config (patrd/engine/config_mounts.py); a swarm node has no such
directory. Here each file *content* is one Swarm config, created on the
manager and given by Swarm to whichever node runs the task, mounted
read-only at ``/etc/config/<file>`` with the docker backend's mode (0644,
root). Swarm configs are immutable, so:

* the name is derived from the deployment and a hash of the content
  (:func:`config_name`): an unchanged file keeps its config, a changed one
  gets a new config, and only the new tasks of the rollout mount it (the
  controller rolls a config change out on this backend:
  ``ControllerOptions.config_rollout``);
* a config no service of this install references any more is removed
  (:func:`unused_configs` decides, after a service is removed: a rollout's
  old instance, a scale-down, a delete).

The content is never logged (a config file may hold credentials); names and
IDs are.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import aiodocker
import aiohttp
import structlog

from patrd.engine.docker_base import translate as _translate
from patrd.engine.labels import LABEL_DEPLOYMENT_ID, LABEL_OWNER, deployment_labels
from patrd.model.errors import EngineError
from patrd.model.instances import InstanceSpec
from patrd.model.spec_shapes import CONFIG_DIR

CONFIG_PREFIX = "patrd."
MAX_CONFIG_NAME = 64  # Swarm's limit on a config's name
NAME_PART = 32  # at most this much of the deployment's name in a config's name
HASH_PART = 20  # hex digits of the digest: 80 bits
FILE_MODE = 0o644  # as config_mounts.py writes the files (read-only mount either way)
FILE_UID = "0"
FILE_GID = "0"


def config_name(owner: str, deployment: str, deployment_id: str, content: bytes) -> str:
    """``patrd.<deployment>.<hash>``; the hash covers the owner and deployment ID too,
    so two installs or two deployments never share one (the name is cut to fit 64)."""
    digest = hashlib.sha256()
    for part in (owner.encode(), deployment_id.encode(), content):
        digest.update(len(part).to_bytes(8, "big") + part)
    return f"{CONFIG_PREFIX}{deployment[:NAME_PART]}.{digest.hexdigest()[:HASH_PART]}"


def config_refs(
    files: Iterable[tuple[str, bytes]], ids: Mapping[str, str], names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The service's ``ContainerSpec.Configs``: one entry per file.

    ``names``: file name → config name; ``ids``: config name → config ID.
    """
    refs = []
    for file, _ in sorted(files):
        name = names[file]
        refs.append(
            {
                "File": {
                    "Name": f"{CONFIG_DIR}/{file}",
                    "UID": FILE_UID,
                    "GID": FILE_GID,
                    "Mode": FILE_MODE,
                },
                "ConfigID": ids[name],
                "ConfigName": name,
            }
        )
    return refs


def referenced(services: Iterable[Mapping[str, Any]]) -> set[str]:
    """Config IDs the services' task templates mount."""
    found = set()
    for service in services:
        spec = service.get("Spec") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        for ref in container.get("Configs") or []:
            if ref.get("ConfigID"):
                found.add(str(ref["ConfigID"]))
    return found


def unused_configs(
    configs: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    owner: str,
    deployment_id: str | None = None,
) -> list[str]:
    """IDs of this owner's configs (of ``deployment_id`` when given) that none of
    ``services`` (all of this install's) mounts: the ones to remove."""
    used = referenced(services)
    out = []
    for config in configs:
        labels = (config.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_OWNER) != owner:
            continue
        if deployment_id is not None and labels.get(LABEL_DEPLOYMENT_ID) != deployment_id:
            continue
        if str(config["ID"]) not in used:
            out.append(str(config["ID"]))
    return sorted(out)


async def ensure_configs(
    docker: aiodocker.Docker, spec: InstanceSpec, owner: str
) -> list[dict[str, Any]]:
    """The configs of ``spec``'s files (existing ones reused, missing ones created);
    the ``ContainerSpec.Configs`` that mount them."""
    if not spec.config_files:
        return []
    names = {
        file: config_name(owner, spec.deployment, spec.deployment_id, content)
        for file, content in spec.config_files
    }
    contents = {names[file]: content for file, content in spec.config_files}
    async with _translate("list configs"):
        existing = await docker.configs.list(filters={"name": sorted(contents)})
    ids = {str(c["Spec"]["Name"]): str(c["ID"]) for c in existing}
    log = structlog.get_logger("patrd.engine.swarm_configs")
    for name, content in sorted(contents.items()):
        if name in ids:
            continue
        ids[name] = await _create(docker, name, content, spec, owner)
        log.info("config created", config=name, deployment=spec.deployment)
    return config_refs(spec.config_files, ids, names)


async def _create(
    docker: aiodocker.Docker, name: str, content: bytes, spec: InstanceSpec, owner: str
) -> str:
    try:
        created = await docker.configs.create(
            name,
            base64.b64encode(content).decode(),
            b64=True,
            labels=deployment_labels(owner, spec.deployment, spec.deployment_id),
        )
    except aiodocker.DockerError as exc:
        if exc.status == 409:  # made meanwhile (same name: same content)
            async with _translate(f"inspect config {name}"):
                return str((await docker.configs.inspect(name))["ID"])
        raise EngineError(f"create config {name}: {exc.message}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise EngineError(f"create config {name}: {exc}") from exc
    return str(created["ID"])


async def remove_unused(
    docker: aiodocker.Docker, owner: str, deployment_id: str | None = None
) -> list[str]:
    """Remove this owner's configs (of one deployment when given) no service mounts;
    the names removed. A config still in use (a service made meanwhile) is left."""
    labels = [f"{LABEL_OWNER}={owner}"]
    if deployment_id is not None:
        labels.append(f"{LABEL_DEPLOYMENT_ID}={deployment_id}")
    async with _translate("list configs"):
        configs = await docker.configs.list(filters={"label": labels})
        if not configs:
            return []
        services = await docker.services.list(filters={"label": [f"{LABEL_OWNER}={owner}"]})
    names = {str(c["ID"]): str((c.get("Spec") or {}).get("Name", "")) for c in configs}
    removed = []
    for config_id in unused_configs(configs, services, owner, deployment_id):
        try:
            await docker.configs.delete(config_id)
        except aiodocker.DockerError as exc:
            if exc.status in (400, 404, 409):  # in use again, or gone already
                continue
            raise EngineError(f"remove config {names[config_id]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove config {names[config_id]}: {exc}") from exc
        removed.append(names[config_id])
    if removed:
        structlog.get_logger("patrd.engine.swarm_configs").info(
            "configs removed", configs=",".join(removed)
        )
    return removed
