"""The validated deployment spec and its parts: frozen values, no I/O.

Built by patrd/model/spec.py from user input (and by ``spec_from_json`` from
what the store wrote); read by the reconciler, the store and the API.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from patrd.model.spec_shapes import (
    DEFAULT_JOB_TIMEOUT_S,
    DEFAULT_REGISTRY,
    DEFAULT_TARGET_CPU,
    LOCAL_REGISTRY,
    PortProtocol,
)


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
        self,
        pinned_image: str | None = None,
        secret_versions: Mapping[str, int] | None = None,
        *,
        config_content: bool = False,
    ) -> str:
        """A digest of what a container is made from (image, env, resources, volumes, probes).

        Instances whose template matches the target revision's are current;
        a change of ports, scale or config files (updated in place) makes a
        new revision but restarts nothing; a probe change rolls out. A secret contributes its
        version, never its value: rotating it changes the template.
        ``config_content``: the config files cannot change under a running
        instance (Swarm configs): their hash is in the template, an edit rolls out.
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
                "config": self.config_map_hash
                if config_content and self.config_mounts
                else bool(self.config_mounts),
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
