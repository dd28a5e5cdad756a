"""Deployment specs: parse and validate user input into frozen objects.

Pure code, no I/O. Every error names the exact field path (``ports.8080``,
``scale.min``) so the API can answer 422 ``{error, field, message}`` and the
CLI can point at the flag. Nothing here knows about Docker or the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from patrd.model import cron
from patrd.model.capabilities import KNOWN_CAPABILITIES
from patrd.model.checks import bool_at, int_at, object_at, reject_unknown, str_at
from patrd.model.errors import SpecError

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DNS_LABEL_MAX = 63
MAX_NAME = DNS_LABEL_MAX - len("65535-")  # 57: "<port>-<name>" is one DNS label
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Docker reference grammar: path components separated by "/", each
# lowercase alnum joined by ".", "_", "__" or runs of "-".
IMAGE_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REGISTRY_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?$"
)

DEFAULT_REGISTRY = "docker.io"
MIN_CPU = 0.25
MAX_CPU = 64.0
MIN_MEMORY_MB = 64
MAX_MEMORY_MB = 1024 * 1024
MAX_SCALE = 256
MAX_ENV_VARS = 256
MAX_ENV_VALUE_BYTES = 32 * 1024

# Set by patrd on every container; a user may not set them (see docs/env.md).
RESERVED_ENV = frozenset(
    {
        "PATR",
        "DEPLOYMENT_ID",
        "DEPLOYMENT_NAME",
        "CONFIG_MAP_HASH",
        "PATRD_INSTANCE",
        "PATRD_REVISION",
    }
)

CREATE_FIELDS = frozenset(
    {
        "name",
        "registry",
        "image",
        "tag",
        "ports",
        "env",
        "scale",
        "resources",
        "deploy_on_create",
        "deploy_on_push",
        "registry_auth",
        "region",
        "startup_probe",
        "liveness_probe",
        "config_mounts",
        "volumes",
        "security",
        "backup",
        "jobs",
    }
)
UPDATE_FIELDS = frozenset(
    {
        "ports",
        "env",
        "scale",
        "resources",
        "startup_probe",
        "liveness_probe",
        "config_mounts",
        "volumes",
        "deploy_on_push",
        "registry_auth",
        "security",
        "backup",
        "jobs",
    }
)
LOCAL_REGISTRY = "local"  # the node registry (config [registry])
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CONFIG_NAME_RE = re.compile(r"[A-Za-z0-9_.()-]+")
VOLUME_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
CONFIG_DIR = "/etc/config"
MAX_CONFIG_FILE_BYTES = 256 * 1024
MAX_CONFIG_TOTAL_BYTES = 1024 * 1024
MAX_CONFIG_FILES = 64
MAX_VOLUMES = 16
MAX_VOLUME_GB = 1024
MAX_JOBS = 32
MAX_JOB_ARGS = 256
MAX_JOB_COMMAND_BYTES = 16 * 1024
DEFAULT_JOB_TIMEOUT_S = 3600
MAX_JOB_TIMEOUT_S = 7 * 86400
PROBE_FIELDS = frozenset({"port", "path", "period_s", "timeout_s", "failure_threshold"})
MAX_PROBE_PATH = 255
IMMUTABLE_FIELDS = {
    "name": "a deployment cannot be renamed; create a new deployment",
    "tag": "the tag cannot be changed after create; create a new deployment with the new tag",
    "image": "the image cannot be changed after create; create a new deployment",
    "registry": "the registry cannot be changed after create; create a new deployment",
    "region": "the region cannot be changed after create",
    "deploy_on_create": "deploy_on_create only applies when creating a deployment",
}


class PortProtocol(StrEnum):
    HTTP = "http"


DEFAULT_TARGET_CPU = 80  # percent of the instances' CPU allocation (autoscaler, issue 7)
MIN_TARGET_CPU = 10
MAX_TARGET_CPU = 100


@dataclass(frozen=True, slots=True)
class Scale:
    min: int = 1
    max: int = 1
    target_cpu: int = DEFAULT_TARGET_CPU  # percent; only used when max > min


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: float = 1.0
    memory_mb: int = 512


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """An HTTP GET from the daemon; 200-399 within ``timeout_s`` passes."""

    port: int
    path: str = "/"
    period_s: float = 10.0
    timeout_s: float = 3.0
    failure_threshold: int = 15

    @property
    def budget_s(self) -> float:
        """How long a startup probe may keep failing before the instance is killed."""
        return self.failure_threshold * self.period_s

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "path": self.path,
            "period_s": self.period_s,
            "timeout_s": self.timeout_s,
            "failure_threshold": self.failure_threshold,
        }


@dataclass(frozen=True, slots=True)
class SecretRef:
    """An env value taken from a secret at container creation."""

    name: str

    def to_json(self) -> dict[str, str]:
        return {"secret": self.name}


EnvValue = str | SecretRef


@dataclass(frozen=True, slots=True)
class SecuritySpec:
    """The one explicit way to loosen the hardening defaults for a deployment."""

    extra_capabilities: tuple[str, ...] = ()  # added to the node's capability set
    pids_limit: int | None = None  # None: the node's [docker] pids_limit; 0: no limit

    def to_json(self) -> dict[str, Any]:
        return {"extra_capabilities": list(self.extra_capabilities), "pids_limit": self.pids_limit}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A scheduled one-off run (patrd/run/jobs.py): ``schedule`` as patrd/model/cron.py reads it."""

    name: str
    schedule: str
    command: tuple[str, ...]
    timeout_s: int = DEFAULT_JOB_TIMEOUT_S

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "command": list(self.command),
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """Each instance gets its own Docker volume of this name, mounted at ``path``."""

    name: str
    path: str
    size_gb: int


MAX_HOOK_ARGS = 64
MAX_HOOK_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class BackupSpec:
    """Off-site backups of this deployment's volumes (patrd/state/offsite.py).

    Each hook is an argv run with exec inside one running instance: ``pre``
    before its volumes are read (e.g. a ``pg_dump`` into a volume), ``post``
    after (always, even when ``pre`` or the backup failed). A string is run
    as ``/bin/sh -c STRING``.
    """

    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"hooks": {"pre": list(self.pre), "post": list(self.post)}}


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What the user asked for. Equality means "no change" for the reconciler."""

    name: str
    image: str
    tag: str
    ports: tuple[tuple[int, PortProtocol], ...]
    registry: str = DEFAULT_REGISTRY
    env: tuple[tuple[str, EnvValue], ...] = ()
    scale: Scale = field(default_factory=Scale)
    resources: Resources = field(default_factory=Resources)
    deploy_on_create: bool = True
    deploy_on_push: bool = True  # a push of this image:tag to the node registry rolls it out
    registry_auth: SecretRef | None = None  # secret "username:password" for pulls
    security: SecuritySpec = field(default_factory=lambda: SecuritySpec())
    region: str = ""
    startup_probe: ProbeSpec | None = None
    liveness_probe: ProbeSpec | None = None
    config_mounts: tuple[tuple[str, bytes], ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()
    backup: BackupSpec = field(default_factory=lambda: BackupSpec())
    jobs: tuple[JobSpec, ...] = ()  # not part of the instance template: no rollout

    @property
    def secret_names(self) -> frozenset[str]:
        names = {v.name for _, v in self.env if isinstance(v, SecretRef)}
        if self.registry_auth is not None:
            names.add(self.registry_auth.name)
        return frozenset(names)

    @property
    def config_map_hash(self) -> str:
        """CONFIG_MAP_HASH: hex SHA-512 over the files sorted by name (docs/env.md)."""
        digest = hashlib.sha512()
        for name, content in sorted(self.config_mounts):
            digest.update(name.encode() + b"\x00" + content + b"\x00")
        return digest.hexdigest()

    def image_ref_via(self, local_registry: str) -> str:
        """The pullable reference: ``local`` becomes the node registry's host:port."""
        if self.registry == LOCAL_REGISTRY:
            return f"{local_registry}/{self.image}:{self.tag}"
        return self.image_ref

    @property
    def image_ref(self) -> str:
        """The reference Docker resolves (no registry prefix for Docker Hub)."""
        base = self.image if self.registry == DEFAULT_REGISTRY else f"{self.registry}/{self.image}"
        return f"{base}:{self.tag}"

    @property
    def http_ports(self) -> tuple[int, ...]:
        return tuple(p for p, proto in self.ports if proto is PortProtocol.HTTP)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "registry": self.registry,
            "image": self.image,
            "tag": self.tag,
            "ports": {str(p): proto.value for p, proto in self.ports},
            "env": {k: v.to_json() if isinstance(v, SecretRef) else v for k, v in self.env},
            "scale": {
                "min": self.scale.min,
                "max": self.scale.max,
                "target_cpu": self.scale.target_cpu,
            },
            "resources": {"cpu": self.resources.cpu, "memory_mb": self.resources.memory_mb},
            "deploy_on_create": self.deploy_on_create,
            "deploy_on_push": self.deploy_on_push,
            "registry_auth": self.registry_auth.to_json() if self.registry_auth else None,
            "security": self.security.to_json(),
            "region": self.region,
            "startup_probe": self.startup_probe.to_json() if self.startup_probe else None,
            "liveness_probe": self.liveness_probe.to_json() if self.liveness_probe else None,
            "config_mounts": {
                name: base64.b64encode(content).decode() for name, content in self.config_mounts
            },
            "volumes": {v.name: {"path": v.path, "size_gb": v.size_gb} for v in self.volumes},
            "backup": self.backup.to_json(),
            "jobs": {j.name: j.to_json() for j in self.jobs},
        }

    def instance_template(
        self, pinned_image: str | None = None, secret_versions: Mapping[str, int] | None = None
    ) -> str:
        """A digest of what a container is made from (image, env, resources, volumes, probes).

        Instances whose template matches the target revision's are current;
        a change of ports, scale or config files (updated in place) makes a
        new revision but restarts nothing; a probe change rolls out. A secret contributes its
        version, never its value: rotating it changes the template.
        """
        versions = secret_versions or {}
        env = [
            [k, {"secret": v.name, "version": versions.get(v.name, 0)}]
            if isinstance(v, SecretRef)
            else [k, v]
            for k, v in self.env
        ]
        material = json.dumps(
            {
                "image": pinned_image or self.image_ref,
                "env": env,
                "cpu": self.resources.cpu,
                "memory_mb": self.resources.memory_mb,
                "volumes": [[v.name, v.path] for v in self.volumes],
                "security": self.security.to_json(),
                # Adding the first config file adds a mount (one rollout);
                # later edits are written in place.
                "config": bool(self.config_mounts),
                # A probe change rolls out like any template change, so a probe
                # that can never pass fails the rollout while the old instances
                # keep serving. Absent probes add nothing (templates unchanged).
                **({"startup_probe": self.startup_probe.to_json()} if self.startup_probe else {}),
                **(
                    {"liveness_probe": self.liveness_probe.to_json()} if self.liveness_probe else {}
                ),
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def parse_create(body: Any, *, region: str) -> DeploymentSpec:
    """Validate a create request; ``region`` is this node's region name."""
    obj = object_at(body, "body")
    reject_unknown(obj, CREATE_FIELDS, "")
    name = _name(_required(obj, "name"))
    registry = _registry(obj.get("registry", DEFAULT_REGISTRY))
    image = _image(_required(obj, "image"))
    tag = _tag(obj.get("tag", "latest"))
    ports = _ports(_required(obj, "ports"))
    env = _env(obj.get("env", {}))
    scale = _scale(obj.get("scale", {}))
    resources = _resources(obj.get("resources", {}))
    deploy_on_create = bool_at(obj.get("deploy_on_create", True), "deploy_on_create")
    deploy_on_push = bool_at(obj.get("deploy_on_push", True), "deploy_on_push")
    registry_auth = _registry_auth(obj.get("registry_auth"))
    security = _security(obj.get("security", {}))
    chosen_region = _region(obj.get("region"), region)
    startup = _probe(obj.get("startup_probe"), "startup_probe", ports)
    liveness = _probe(obj.get("liveness_probe"), "liveness_probe", ports)
    config_mounts = _config_mounts(obj.get("config_mounts", {}))
    volumes = _volumes(obj.get("volumes", {}))
    _volumes_fix_scale(volumes, scale)
    backup = _backup(obj.get("backup", {}))
    jobs = _jobs(obj.get("jobs", {}))
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
    reject_unknown(obj, UPDATE_FIELDS | IMMUTABLE_FIELDS.keys(), "")
    changes: dict[str, Any] = {}
    if "ports" in obj:
        changes["ports"] = _ports(obj["ports"])
    if "env" in obj:
        changes["env"] = _env(obj["env"])
    if "scale" in obj:
        changes["scale"] = _scale(obj["scale"], base=current.scale)
    if "resources" in obj:
        changes["resources"] = _resources(obj["resources"], base=current.resources)
    if "registry_auth" in obj:
        changes["registry_auth"] = _registry_auth(obj["registry_auth"])
    if "security" in obj:
        changes["security"] = _security(obj["security"])
    if "deploy_on_push" in obj:
        changes["deploy_on_push"] = bool_at(obj["deploy_on_push"], "deploy_on_push")
    if "config_mounts" in obj:
        changes["config_mounts"] = _config_mounts(obj["config_mounts"])
    if "jobs" in obj:
        changes["jobs"] = _jobs(obj["jobs"])
    if "volumes" in obj:
        changes["volumes"] = _grow_volumes(current.volumes, _volumes(obj["volumes"]))
    if "backup" in obj:
        changes["backup"] = _backup(obj["backup"])
    _volumes_fix_scale(changes.get("volumes", current.volumes), changes.get("scale", current.scale))
    ports = changes.get("ports", current.ports)
    for key in ("startup_probe", "liveness_probe"):
        if key in obj:
            changes[key] = _probe(obj[key], key, ports)
        else:
            kept: ProbeSpec | None = getattr(current, key)
            if kept is not None:
                _probe_port(kept.port, f"{key}.port", ports)
    return replace(current, **changes)


def spec_from_json(data: Mapping[str, Any]) -> DeploymentSpec:
    """Load a spec the store wrote; it was valid when written, so re-validate cheaply."""
    return DeploymentSpec(
        name=data["name"],
        registry=data["registry"],
        image=data["image"],
        tag=data["tag"],
        ports=_ports(data["ports"]),
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
        security=_security(data.get("security") or {}),
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
        backup=_backup(data.get("backup") or {}),
        jobs=tuple(
            JobSpec(name, j["schedule"], tuple(j["command"]), j["timeout_s"])
            for name, j in sorted((data.get("jobs") or {}).items())
        ),
    )


# --- field parsers -------------------------------------------------------


def _required(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj or obj[key] is None:
        raise SpecError(key, "is required")
    return obj[key]


def _name(value: Any) -> str:
    name = str_at(value, "name")
    if not 2 <= len(name) <= MAX_NAME:
        raise SpecError(
            "name",
            f"must be 2 to {MAX_NAME} characters long: every default hostname label "
            f"<port>-<name> must fit DNS's 63 characters (ports have up to 5 digits), "
            f"got {len(name)}",
        )
    if not NAME_RE.fullmatch(name):
        raise SpecError(
            "name",
            "may contain only lowercase letters, digits and '-', "
            "and must start and end with a letter or digit",
        )
    return name


def _registry(value: Any) -> str:
    registry = str_at(value, "registry").strip().lower()
    if registry in {"docker.io", "registry-1.docker.io", "index.docker.io", "hub.docker.com"}:
        return DEFAULT_REGISTRY
    if registry == LOCAL_REGISTRY:
        return LOCAL_REGISTRY
    if len(registry) > 253 or not REGISTRY_RE.fullmatch(registry):
        raise SpecError("registry", "must be a registry host name, optionally with :port")
    return registry


def _image(value: Any) -> str:
    image = str_at(value, "image")
    if not image or len(image) > 255:
        raise SpecError("image", "must be 1 to 255 characters long")
    if ":" in image or "@" in image:
        raise SpecError("image", "give the repository only; put the tag in 'tag'")
    for part in image.split("/"):
        if not IMAGE_COMPONENT_RE.fullmatch(part):
            raise SpecError(
                "image",
                f"invalid repository component {part!r}: lowercase letters, digits and "
                "single '.', '_', '__' or '-' separators",
            )
    return image


def _tag(value: Any) -> str:
    tag = str_at(value, "tag")
    if not TAG_RE.fullmatch(tag):
        raise SpecError(
            "tag",
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        )
    return tag


def _ports(value: Any) -> tuple[tuple[int, PortProtocol], ...]:
    obj = object_at(value, "ports")
    if not obj:
        raise SpecError("ports", "expose at least one port")
    ports: dict[int, PortProtocol] = {}
    for key, proto in obj.items():
        path = f"ports.{key}"
        if not isinstance(key, str) or not (key.isascii() and key.isdigit()) or key[0] == "0":
            raise SpecError(path, "port must be a number from 1 to 65535")
        number = int(key)
        if not 1 <= number <= 65535:
            raise SpecError(path, "port must be a number from 1 to 65535")
        try:
            ports[number] = PortProtocol(str_at(proto, path))
        except ValueError:
            allowed = ", ".join(p.value for p in PortProtocol)
            raise SpecError(path, f"unknown protocol {proto!r}; allowed: {allowed}") from None
    return tuple(sorted(ports.items()))


def _env(value: Any) -> tuple[tuple[str, EnvValue], ...]:
    obj = object_at(value, "env")
    if len(obj) > MAX_ENV_VARS:
        raise SpecError("env", f"at most {MAX_ENV_VARS} variables")
    env: list[tuple[str, EnvValue]] = []
    for key, val in obj.items():
        path = f"env.{key}"
        if not ENV_NAME_RE.fullmatch(key):
            raise SpecError(
                path, "a variable name is letters, digits and '_', not starting with a digit"
            )
        if key in RESERVED_ENV:
            raise SpecError(path, "is set by patrd on every container and cannot be overridden")
        if isinstance(val, Mapping):
            env.append((key, _secret_ref(val, path)))
            continue
        if not isinstance(val, str):
            raise SpecError(path, 'must be a string or {"secret": "<name>"}')
        text = val
        if "\x00" in text:
            raise SpecError(path, "must not contain NUL characters")
        if len(text.encode()) > MAX_ENV_VALUE_BYTES:
            raise SpecError(path, f"value longer than {MAX_ENV_VALUE_BYTES} bytes")
        env.append((key, text))
    return tuple(sorted(env))


def _secret_ref(value: Mapping[str, Any], path: str) -> SecretRef:
    if set(value) != {"secret"}:
        raise SpecError(path, 'a secret reference is {"secret": "<name>"} and nothing else')
    name = value["secret"]
    if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name):
        raise SpecError(
            f"{path}.secret", "a secret name is 1 to 64 letters, digits, '_', '.' or '-'"
        )
    return SecretRef(name)


def _security(value: Any) -> SecuritySpec:
    obj = object_at(value, "security")
    reject_unknown(obj, frozenset({"extra_capabilities", "pids_limit"}), "security.")
    caps_raw = obj.get("extra_capabilities", [])
    if not isinstance(caps_raw, list) or not all(isinstance(c, str) for c in caps_raw):
        raise SpecError("security.extra_capabilities", "must be a list of capability names")
    caps = []
    for i, cap in enumerate(caps_raw):
        name = cap.upper().removeprefix("CAP_")
        if name not in KNOWN_CAPABILITIES:
            raise SpecError(f"security.extra_capabilities[{i}]", f"unknown capability {cap!r}")
        caps.append(name)
    pids = obj.get("pids_limit")
    if pids is not None:
        pids = int_at(pids, "security.pids_limit")
        if not 0 <= pids <= 1_000_000:
            raise SpecError("security.pids_limit", "must be from 0 (no limit) to 1000000")
    return SecuritySpec(extra_capabilities=tuple(sorted(set(caps))), pids_limit=pids)


def _registry_auth(value: Any) -> SecretRef | None:
    if value is None:
        return None
    return _secret_ref(object_at(value, "registry_auth"), "registry_auth")


def secret_name(value: Any) -> str:
    """Validate a secret's own name (the API's ``name`` field)."""
    name = str_at(value, "name")
    if not SECRET_NAME_RE.fullmatch(name):
        raise SpecError("name", "must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    return name


def config_file_name(name: str, path: str) -> str:
    if not CONFIG_NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise SpecError(
            path,
            "file name may hold only letters, digits and the characters _ . ( ) - "
            f"(and is not . or ..); files live in {CONFIG_DIR}",
        )
    if len(name) > 255:
        raise SpecError(path, "file name longer than 255 characters")
    return name


def _config_mounts(value: Any) -> tuple[tuple[str, bytes], ...]:
    obj = object_at(value, "config_mounts")
    if len(obj) > MAX_CONFIG_FILES:
        raise SpecError("config_mounts", f"at most {MAX_CONFIG_FILES} files")
    files: list[tuple[str, bytes]] = []
    total = 0
    for key, raw in obj.items():
        path = f"config_mounts.{key}"
        if "/" in key:
            raise SpecError(
                path, f"config files are mounted in {CONFIG_DIR} only: give a file name, not a path"
            )
        config_file_name(key, path)
        if not isinstance(raw, str):
            raise SpecError(path, "must be the file's content in base64")
        try:
            content = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise SpecError(path, "is not valid base64") from None
        if len(content) > MAX_CONFIG_FILE_BYTES:
            raise SpecError(path, f"larger than {MAX_CONFIG_FILE_BYTES // 1024} KiB")
        total += len(content)
        files.append((key, content))
    if total > MAX_CONFIG_TOTAL_BYTES:
        raise SpecError("config_mounts", f"larger than {MAX_CONFIG_TOTAL_BYTES // 1024} KiB in all")
    return tuple(sorted(files))


def _volumes(value: Any) -> tuple[VolumeSpec, ...]:
    obj = object_at(value, "volumes")
    if len(obj) > MAX_VOLUMES:
        raise SpecError("volumes", f"at most {MAX_VOLUMES} volumes")
    volumes: list[VolumeSpec] = []
    paths: dict[str, str] = {}
    for key, raw in obj.items():
        path = f"volumes.{key}"
        if not VOLUME_NAME_RE.fullmatch(key):
            raise SpecError(
                path, "name must be 1-32 of [a-z0-9_-], starting with a letter or digit"
            )
        item = object_at(raw, path)
        reject_unknown(item, frozenset({"path", "size_gb"}), f"{path}.")
        mount = str_at(_required_at(item, "path", path), f"{path}.path")
        normal = "/" + "/".join(p for p in mount.split("/") if p)
        if not mount.startswith("/") or ".." in mount.split("/") or normal == "/":
            raise SpecError(f"{path}.path", "must be an absolute path other than /, without ..")
        if normal == CONFIG_DIR or normal.startswith(CONFIG_DIR + "/"):
            raise SpecError(f"{path}.path", f"{CONFIG_DIR} is reserved for config mounts")
        if normal in paths:
            raise SpecError(f"{path}.path", f"already used by volume {paths[normal]}")
        paths[normal] = key
        size = int_at(_required_at(item, "size_gb", path), f"{path}.size_gb")
        if not 1 <= size <= MAX_VOLUME_GB:
            raise SpecError(f"{path}.size_gb", f"must be from 1 to {MAX_VOLUME_GB}")
        volumes.append(VolumeSpec(key, normal, size))
    return tuple(sorted(volumes, key=lambda v: v.name))


def _backup(value: Any) -> BackupSpec:
    obj = object_at(value, "backup")
    reject_unknown(obj, frozenset({"hooks"}), "backup.")
    hooks = object_at(obj.get("hooks", {}), "backup.hooks")
    reject_unknown(hooks, frozenset({"pre", "post"}), "backup.hooks.")
    return BackupSpec(
        pre=_hook(hooks.get("pre"), "backup.hooks.pre"),
        post=_hook(hooks.get("post"), "backup.hooks.post"),
    )


def _hook(value: Any, path: str) -> tuple[str, ...]:
    """A command: a shell line (run with /bin/sh -c) or an argv list; none: ()."""
    if value is None or value == "" or value == []:
        return ()
    if isinstance(value, str):
        argv = ["/bin/sh", "-c", value]
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise SpecError(path, "must be a shell command (string) or an argv (list of strings)")
    if len(argv) > MAX_HOOK_ARGS or sum(len(a.encode()) for a in argv) > MAX_HOOK_BYTES:
        raise SpecError(path, f"at most {MAX_HOOK_ARGS} arguments and {MAX_HOOK_BYTES} bytes")
    if any("\x00" in a for a in argv) or not argv[0]:
        raise SpecError(path, "must name a program and contain no NUL characters")
    return tuple(argv)


def _jobs(value: Any) -> tuple[JobSpec, ...]:
    obj = object_at(value, "jobs")
    if len(obj) > MAX_JOBS:
        raise SpecError("jobs", f"at most {MAX_JOBS} jobs")
    jobs = []
    for key, raw in obj.items():
        path = f"jobs.{key}"
        if not isinstance(key, str) or len(key) > 40 or not NAME_RE.fullmatch(key):
            raise SpecError(path, "name must be 1-40 of [a-z0-9-], not starting or ending with -")
        item = object_at(raw, path)
        reject_unknown(item, frozenset({"schedule", "command", "timeout_s"}), f"{path}.")
        schedule = str_at(_required_at(item, "schedule", path), f"{path}.schedule")
        try:
            cron.parse(schedule)
        except cron.ScheduleError as exc:
            raise SpecError(f"{path}.schedule", str(exc)) from None
        command = _required_at(item, "command", path)
        if not isinstance(command, list) or not command:
            raise SpecError(f"{path}.command", "must be a non-empty list of strings (argv)")
        if len(command) > MAX_JOB_ARGS:
            raise SpecError(f"{path}.command", f"at most {MAX_JOB_ARGS} arguments")
        for i, arg in enumerate(command):
            if not isinstance(arg, str) or "\x00" in arg:
                raise SpecError(f"{path}.command.{i}", "must be a string without NUL")
        if sum(len(a.encode()) for a in command) > MAX_JOB_COMMAND_BYTES:
            raise SpecError(f"{path}.command", f"longer than {MAX_JOB_COMMAND_BYTES} bytes")
        timeout = int_at(item.get("timeout_s", DEFAULT_JOB_TIMEOUT_S), f"{path}.timeout_s")
        if not 1 <= timeout <= MAX_JOB_TIMEOUT_S:
            raise SpecError(f"{path}.timeout_s", f"must be from 1 to {MAX_JOB_TIMEOUT_S}")
        jobs.append(JobSpec(key, schedule.strip(), tuple(command), timeout))
    return tuple(sorted(jobs, key=lambda j: j.name))


def _grow_volumes(
    current: tuple[VolumeSpec, ...], wanted: tuple[VolumeSpec, ...]
) -> tuple[VolumeSpec, ...]:
    """Volumes are fixed at create; only ``size_gb`` may grow."""
    old = {v.name: v for v in current}
    new = {v.name: v for v in wanted}
    if set(old) != set(new):
        changed = sorted(set(new) ^ set(old))
        raise SpecError(
            f"volumes.{changed[0]}",
            "volumes cannot be added or removed after create; only size_gb can grow",
        )
    for name, volume in new.items():
        if volume.path != old[name].path:
            raise SpecError(f"volumes.{name}.path", "a volume's path cannot change")
        if volume.size_gb < old[name].size_gb:
            raise SpecError(f"volumes.{name}.size_gb", f"can only grow (now {old[name].size_gb})")
    return wanted


def _volumes_fix_scale(volumes: tuple[VolumeSpec, ...], scale: Scale) -> None:
    if volumes and scale.max != scale.min:
        raise SpecError(
            "scale.max",
            "deployments with volumes do not autoscale: set scale.max equal to scale.min",
        )


def _scale(value: Any, base: Scale | None = None) -> Scale:
    obj = object_at(value, "scale")
    reject_unknown(obj, frozenset({"min", "max", "target_cpu"}), "scale.")
    start = base or Scale()
    lo = int_at(obj["min"], "scale.min") if "min" in obj else start.min
    hi = int_at(obj["max"], "scale.max") if "max" in obj else max(start.max, lo)
    if not 1 <= lo <= MAX_SCALE:
        raise SpecError("scale.min", f"must be from 1 to {MAX_SCALE}")
    if not 1 <= hi <= MAX_SCALE:
        raise SpecError("scale.max", f"must be from 1 to {MAX_SCALE}")
    if hi < lo:
        raise SpecError("scale.max", f"must be at least scale.min ({lo})")
    target = start.target_cpu
    if "target_cpu" in obj:
        target = int_at(obj["target_cpu"], "scale.target_cpu")
        if not MIN_TARGET_CPU <= target <= MAX_TARGET_CPU:
            raise SpecError(
                "scale.target_cpu",
                f"must be a percentage of the CPU allocation from {MIN_TARGET_CPU} to "
                f"{MAX_TARGET_CPU}, e.g. 80",
            )
    return Scale(min=lo, max=hi, target_cpu=target)


def _resources(value: Any, base: Resources | None = None) -> Resources:
    obj = object_at(value, "resources")
    reject_unknown(obj, frozenset({"cpu", "memory_mb"}), "resources.")
    start = base or Resources()
    cpu = start.cpu
    if "cpu" in obj:
        raw = obj["cpu"]
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise SpecError("resources.cpu", "must be a number of CPUs, e.g. 0.5")
        cpu = float(raw)
        if not MIN_CPU <= cpu <= MAX_CPU:
            raise SpecError("resources.cpu", f"must be from {MIN_CPU} to {MAX_CPU}")
    memory = (
        int_at(obj["memory_mb"], "resources.memory_mb") if "memory_mb" in obj else start.memory_mb
    )
    if not MIN_MEMORY_MB <= memory <= MAX_MEMORY_MB:
        raise SpecError("resources.memory_mb", f"must be from {MIN_MEMORY_MB} to {MAX_MEMORY_MB}")
    return Resources(cpu=cpu, memory_mb=memory)


def _probe(value: Any, path: str, ports: tuple[tuple[int, PortProtocol], ...]) -> ProbeSpec | None:
    if value is None:
        return None
    obj = object_at(value, path)
    reject_unknown(obj, PROBE_FIELDS, f"{path}.")
    port = int_at(_required_at(obj, "port", path), f"{path}.port")
    _probe_port(port, f"{path}.port", ports)
    probe_path = str_at(obj.get("path", "/"), f"{path}.path")
    if not probe_path.startswith("/"):
        raise SpecError(f"{path}.path", "must start with '/'")
    if len(probe_path) > MAX_PROBE_PATH:
        raise SpecError(f"{path}.path", f"at most {MAX_PROBE_PATH} characters")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in probe_path):
        raise SpecError(f"{path}.path", "must not contain spaces or control characters")
    period = _number(obj.get("period_s", 10), f"{path}.period_s", 0.1, 3600)
    timeout = _number(obj.get("timeout_s", 3), f"{path}.timeout_s", 0.1, 60)
    threshold = int_at(obj.get("failure_threshold", 15), f"{path}.failure_threshold")
    if not 1 <= threshold <= 1000:
        raise SpecError(f"{path}.failure_threshold", "must be from 1 to 1000")
    return ProbeSpec(
        port=port,
        path=probe_path,
        period_s=period,
        timeout_s=timeout,
        failure_threshold=threshold,
    )


def _probe_port(port: int, path: str, ports: tuple[tuple[int, PortProtocol], ...]) -> None:
    http = [p for p, proto in ports if proto is PortProtocol.HTTP]
    if port not in http:
        listed = ", ".join(str(p) for p in http)
        raise SpecError(path, f"must be one of the deployment's http ports ({listed})")


def _required_at(obj: Mapping[str, Any], key: str, prefix: str) -> Any:
    if key not in obj or obj[key] is None:
        raise SpecError(f"{prefix}.{key}", "is required")
    return obj[key]


def _number(value: Any, path: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(path, "must be a number")
    if not lo <= value <= hi:
        raise SpecError(path, f"must be from {lo:g} to {hi:g}")
    return float(value)


def _region(value: Any, node_region: str) -> str:
    if value is None or value == "":
        return node_region
    region = str_at(value, "region")
    if region != node_region:
        raise SpecError("region", f"unknown region {region!r}; known regions: {node_region}")
    return region
