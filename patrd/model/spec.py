"""Deployment specs: parse and validate user input into frozen objects.

Pure code, no I/O. Every error names the exact field path (``ports.8080``,
``scale.min``) so the API can answer 422 ``{error, field, message}`` and the
CLI can point at the flag. Nothing here knows about Docker or the database.

The spec is split by job: the limits and the declared request shapes
(spec_shapes, also the source of the OpenAPI schemas), the frozen values
(spec_types), the field parsers (spec_fields) and, here, a create, a patch
and a stored spec read back. The names below are re-exported so that
``spec.X`` keeps meaning what it always did.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from patrd.model import spec_fields as fields
from patrd.model.checks import bool_at, object_at
from patrd.model.errors import SpecError
from patrd.model.spec_fields import config_file_name as config_file_name
from patrd.model.spec_fields import secret_name as secret_name
from patrd.model.spec_shapes import BACKUP as BACKUP
from patrd.model.spec_shapes import CONFIG_DIR as CONFIG_DIR
from patrd.model.spec_shapes import CONFIG_MOUNTS as CONFIG_MOUNTS
from patrd.model.spec_shapes import CONFIG_NAME_RE as CONFIG_NAME_RE
from patrd.model.spec_shapes import CREATE as CREATE
from patrd.model.spec_shapes import CREATE_FIELDS as CREATE_FIELDS
from patrd.model.spec_shapes import DEFAULT_JOB_TIMEOUT_S as DEFAULT_JOB_TIMEOUT_S
from patrd.model.spec_shapes import DEFAULT_REGISTRY as DEFAULT_REGISTRY
from patrd.model.spec_shapes import DEFAULT_TARGET_CPU as DEFAULT_TARGET_CPU
from patrd.model.spec_shapes import DNS_LABEL_MAX as DNS_LABEL_MAX
from patrd.model.spec_shapes import ENV as ENV
from patrd.model.spec_shapes import ENV_NAME_RE as ENV_NAME_RE
from patrd.model.spec_shapes import HOOK as HOOK
from patrd.model.spec_shapes import IMAGE_COMPONENT_RE as IMAGE_COMPONENT_RE
from patrd.model.spec_shapes import IMMUTABLE_FIELDS as IMMUTABLE_FIELDS
from patrd.model.spec_shapes import JOB as JOB
from patrd.model.spec_shapes import JOBS as JOBS
from patrd.model.spec_shapes import LOCAL_REGISTRY as LOCAL_REGISTRY
from patrd.model.spec_shapes import MAX_CONFIG_FILE_BYTES as MAX_CONFIG_FILE_BYTES
from patrd.model.spec_shapes import MAX_CONFIG_FILES as MAX_CONFIG_FILES
from patrd.model.spec_shapes import MAX_CONFIG_TOTAL_BYTES as MAX_CONFIG_TOTAL_BYTES
from patrd.model.spec_shapes import MAX_CPU as MAX_CPU
from patrd.model.spec_shapes import MAX_ENV_VALUE_BYTES as MAX_ENV_VALUE_BYTES
from patrd.model.spec_shapes import MAX_ENV_VARS as MAX_ENV_VARS
from patrd.model.spec_shapes import MAX_HOOK_ARGS as MAX_HOOK_ARGS
from patrd.model.spec_shapes import MAX_HOOK_BYTES as MAX_HOOK_BYTES
from patrd.model.spec_shapes import MAX_JOB_ARGS as MAX_JOB_ARGS
from patrd.model.spec_shapes import MAX_JOB_COMMAND_BYTES as MAX_JOB_COMMAND_BYTES
from patrd.model.spec_shapes import MAX_JOB_TIMEOUT_S as MAX_JOB_TIMEOUT_S
from patrd.model.spec_shapes import MAX_JOBS as MAX_JOBS
from patrd.model.spec_shapes import MAX_MEMORY_MB as MAX_MEMORY_MB
from patrd.model.spec_shapes import MAX_NAME as MAX_NAME
from patrd.model.spec_shapes import MAX_PROBE_PATH as MAX_PROBE_PATH
from patrd.model.spec_shapes import MAX_SCALE as MAX_SCALE
from patrd.model.spec_shapes import MAX_TARGET_CPU as MAX_TARGET_CPU
from patrd.model.spec_shapes import MAX_VOLUME_GB as MAX_VOLUME_GB
from patrd.model.spec_shapes import MAX_VOLUMES as MAX_VOLUMES
from patrd.model.spec_shapes import MIN_CPU as MIN_CPU
from patrd.model.spec_shapes import MIN_MEMORY_MB as MIN_MEMORY_MB
from patrd.model.spec_shapes import MIN_TARGET_CPU as MIN_TARGET_CPU
from patrd.model.spec_shapes import NAME as NAME
from patrd.model.spec_shapes import NAME_RE as NAME_RE
from patrd.model.spec_shapes import PORTS as PORTS
from patrd.model.spec_shapes import PROBE as PROBE
from patrd.model.spec_shapes import PROBE_FIELDS as PROBE_FIELDS
from patrd.model.spec_shapes import PROBE_PATH_RE as PROBE_PATH_RE
from patrd.model.spec_shapes import REGISTRY_RE as REGISTRY_RE
from patrd.model.spec_shapes import RESERVED_ENV as RESERVED_ENV
from patrd.model.spec_shapes import RESOURCES as RESOURCES
from patrd.model.spec_shapes import SCALE as SCALE
from patrd.model.spec_shapes import SECRET_NAME_RE as SECRET_NAME_RE
from patrd.model.spec_shapes import SECRET_REF as SECRET_REF
from patrd.model.spec_shapes import SECURITY as SECURITY
from patrd.model.spec_shapes import TAG_RE as TAG_RE
from patrd.model.spec_shapes import UPDATE as UPDATE
from patrd.model.spec_shapes import UPDATE_FIELDS as UPDATE_FIELDS
from patrd.model.spec_shapes import VOLUME as VOLUME
from patrd.model.spec_shapes import VOLUME_NAME_RE as VOLUME_NAME_RE
from patrd.model.spec_shapes import VOLUMES as VOLUMES
from patrd.model.spec_shapes import PortProtocol as PortProtocol
from patrd.model.spec_types import (
    BackupSpec as BackupSpec,
)
from patrd.model.spec_types import (
    DeploymentSpec as DeploymentSpec,
)
from patrd.model.spec_types import (
    EnvValue as EnvValue,
)
from patrd.model.spec_types import (
    JobSpec as JobSpec,
)
from patrd.model.spec_types import (
    ProbeSpec as ProbeSpec,
)
from patrd.model.spec_types import (
    Resources as Resources,
)
from patrd.model.spec_types import (
    Scale as Scale,
)
from patrd.model.spec_types import (
    SecretRef as SecretRef,
)
from patrd.model.spec_types import (
    SecuritySpec as SecuritySpec,
)
from patrd.model.spec_types import (
    VolumeSpec as VolumeSpec,
)


def parse_create(body: Any, *, region: str) -> DeploymentSpec:
    """Validate a create request; ``region`` is this node's region name."""
    obj = CREATE.check(body, "body")
    name = fields.name(fields.required(obj, "name"))
    registry = fields.registry(obj.get("registry", DEFAULT_REGISTRY))
    image = fields.image(fields.required(obj, "image"))
    tag = fields.tag(obj.get("tag", "latest"))
    ports = fields.ports(fields.required(obj, "ports"))
    env = fields.env(obj.get("env", {}))
    scale = fields.scale(obj.get("scale", {}))
    resources = fields.resources(obj.get("resources", {}))
    deploy_on_create = bool_at(obj.get("deploy_on_create", True), "deploy_on_create")
    deploy_on_push = bool_at(obj.get("deploy_on_push", True), "deploy_on_push")
    registry_auth = fields.registry_auth(obj.get("registry_auth"))
    security = fields.security(obj.get("security", {}))
    chosen_region = fields.region(obj.get("region"), region)
    startup = fields.probe(obj.get("startup_probe"), "startup_probe", ports)
    liveness = fields.probe(obj.get("liveness_probe"), "liveness_probe", ports)
    config_mounts = fields.config_mounts(obj.get("config_mounts", {}))
    volumes = fields.volumes(obj.get("volumes", {}))
    fields.volumes_fix_scale(volumes, scale)
    backup = fields.backup(obj.get("backup", {}))
    jobs = fields.jobs(obj.get("jobs", {}))
    return DeploymentSpec(
        name=name,
        registry=registry,
        image=image,
        tag=tag,
        ports=ports,
        env=env,
        scale=scale,
        resources=resources,
        deploy_on_create=deploy_on_create,
        deploy_on_push=deploy_on_push,
        registry_auth=registry_auth,
        security=security,
        region=chosen_region,
        startup_probe=startup,
        liveness_probe=liveness,
        config_mounts=config_mounts,
        volumes=volumes,
        backup=backup,
        jobs=jobs,
    )


def parse_update(current: DeploymentSpec, body: Any) -> DeploymentSpec:
    """Apply a PATCH body to ``current``; immutable fields are refused by name."""
    obj = object_at(body, "body")
    for key, why in IMMUTABLE_FIELDS.items():
        if key in obj and obj[key] != getattr(current, key):
            raise SpecError(key, why)
    UPDATE.check(obj, "body")
    changes: dict[str, Any] = {}
    if "ports" in obj:
        changes["ports"] = fields.ports(obj["ports"])
    if "env" in obj:
        changes["env"] = fields.env(obj["env"])
    if "scale" in obj:
        changes["scale"] = fields.scale(obj["scale"], base=current.scale)
    if "resources" in obj:
        changes["resources"] = fields.resources(obj["resources"], base=current.resources)
    if "registry_auth" in obj:
        changes["registry_auth"] = fields.registry_auth(obj["registry_auth"])
    if "security" in obj:
        changes["security"] = fields.security(obj["security"])
    if "deploy_on_push" in obj:
        changes["deploy_on_push"] = bool_at(obj["deploy_on_push"], "deploy_on_push")
    if "config_mounts" in obj:
        changes["config_mounts"] = fields.config_mounts(obj["config_mounts"])
    if "jobs" in obj:
        changes["jobs"] = fields.jobs(obj["jobs"])
    if "volumes" in obj:
        changes["volumes"] = fields.grow_volumes(current.volumes, fields.volumes(obj["volumes"]))
    if "backup" in obj:
        changes["backup"] = fields.backup(obj["backup"])
    fields.volumes_fix_scale(
        changes.get("volumes", current.volumes), changes.get("scale", current.scale)
    )
    ports = changes.get("ports", current.ports)
    for key in ("startup_probe", "liveness_probe"):
        if key in obj:
            changes[key] = fields.probe(obj[key], key, ports)
        else:
            kept: ProbeSpec | None = getattr(current, key)
            if kept is not None:
                fields.probe_port(kept.port, f"{key}.port", ports)
    return replace(current, **changes)


def spec_from_json(data: Mapping[str, Any]) -> DeploymentSpec:
    """Load a spec the store wrote; it was valid when written, so re-validate cheaply."""
    return DeploymentSpec(
        name=data["name"],
        registry=data["registry"],
        image=data["image"],
        tag=data["tag"],
        ports=fields.ports(data["ports"]),
        env=tuple(
            sorted(
                (k, SecretRef(v["secret"]) if isinstance(v, dict) else v)
                for k, v in data["env"].items()
            )
        ),
        scale=Scale(**data["scale"]),
        resources=Resources(**data["resources"]),
        deploy_on_create=data["deploy_on_create"],
        deploy_on_push=data.get("deploy_on_push", True),
        registry_auth=SecretRef(data["registry_auth"]["secret"])
        if data.get("registry_auth")
        else None,
        security=fields.security(data.get("security") or {}),
        region=data.get("region", ""),
        startup_probe=ProbeSpec(**data["startup_probe"]) if data.get("startup_probe") else None,
        liveness_probe=ProbeSpec(**data["liveness_probe"]) if data.get("liveness_probe") else None,
        config_mounts=tuple(
            sorted(
                (name, base64.b64decode(content))
                for name, content in data.get("config_mounts", {}).items()
            )
        ),
        volumes=tuple(
            sorted(
                (
                    VolumeSpec(name, v["path"], v["size_gb"])
                    for name, v in data.get("volumes", {}).items()
                ),
                key=lambda v: v.name,
            )
        ),
        backup=fields.backup(data.get("backup") or {}),
        jobs=tuple(
            JobSpec(name, j["schedule"], tuple(j["command"]), j["timeout_s"])
            for name, j in sorted((data.get("jobs") or {}).items())
        ),
    )
