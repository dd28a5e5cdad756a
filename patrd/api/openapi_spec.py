"""The request shapes of a deployment: its spec, a create and a patch."""

from __future__ import annotations

from typing import Any

from patrd.api import openapi_runs
from patrd.model import spec

_PORTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        'Container port (a decimal string, "1".."65535") → protocol. '
        "Each HTTP port is served at http://<port>-<name>.<base_domain>."
    ),
    "minProperties": 1,
    "additionalProperties": {"type": "string", "enum": [p.value for p in spec.PortProtocol]},
    "example": {"80": "http"},
}
_ENV_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        f"Environment variables; names match [A-Za-z_][A-Za-z0-9_]*, at most "
        f"{spec.MAX_ENV_VARS}, values at most {spec.MAX_ENV_VALUE_BYTES} bytes. Reserved: "
        + ", ".join(sorted(spec.RESERVED_ENV))
    ),
    "maxProperties": spec.MAX_ENV_VARS,
    "additionalProperties": {"type": "string"},
}
_SCALE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min": {"type": "integer", "minimum": 1, "maximum": spec.MAX_SCALE, "default": 1},
        "max": {
            "type": "integer",
            "minimum": 1,
            "maximum": spec.MAX_SCALE,
            "description": "at least min; defaults to max(current max, min)",
        },
        "target_cpu": {
            "type": "integer",
            "minimum": spec.MIN_TARGET_CPU,
            "maximum": spec.MAX_TARGET_CPU,
            "default": spec.DEFAULT_TARGET_CPU,
            "description": (
                "autoscaler target: percent of the instances' CPU allocation (used when max > min "
                "and the deployment has no volumes)"
            ),
        },
    },
}
_RESOURCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cpu": {
            "type": "number",
            "minimum": spec.MIN_CPU,
            "maximum": spec.MAX_CPU,
            "default": 1.0,
        },
        "memory_mb": {
            "type": "integer",
            "minimum": spec.MIN_MEMORY_MB,
            "maximum": spec.MAX_MEMORY_MB,
            "default": 512,
        },
    },
}

_PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "description": "HTTP GET from the daemon; 200-399 within timeout_s passes",
    "properties": {
        "port": {"type": "integer", "description": "one of the deployment's http ports"},
        "path": {"type": "string", "default": "/", "maxLength": 255, "pattern": "^/"},
        "period_s": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 10},
        "timeout_s": {"type": "number", "minimum": 0.1, "maximum": 60, "default": 3},
        "failure_threshold": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 15},
    },
}

# Deploy on push, registry auth, config mounts, volumes, security: the same in a
# stored spec, a create and an update.
_SPEC_EXTRAS: dict[str, Any] = {
    "deploy_on_push": {"type": "boolean", "default": True},
    "registry_auth": {
        "type": "object",
        "nullable": True,
        "description": 'pull credentials: {"secret": NAME} holding username:password',
        "properties": {"secret": {"type": "string"}},
    },
    "config_mounts": {
        "type": "object",
        "description": "file name in /etc/config -> content (base64)",
        "additionalProperties": {"type": "string", "format": "byte"},
    },
    "volumes": {
        "type": "object",
        "description": "volume name -> one Docker volume per instance",
        "additionalProperties": {
            "type": "object",
            "required": ["path", "size_gb"],
            "properties": {
                "path": {"type": "string"},
                "size_gb": {"type": "integer", "minimum": 1},
            },
        },
    },
    "jobs": openapi_runs.JOB_SPEC_SCHEMA,
    "security": {
        "type": "object",
        "description": (
            "the explicit override of the hardening defaults, within the operator's "
            "[security] policy (README: Trust boundaries); outside it: 422"
        ),
        "properties": {
            "extra_capabilities": {
                "type": "array",
                "items": {"type": "string"},
                "description": "only from security.allowed_capabilities; never SYS_ADMIN & co.",
            },
            "pids_limit": {
                "type": "integer",
                "nullable": True,
                "minimum": 0,
                "description": (
                    "security.pids_min..pids_max (0 only in specs stored before the policy); "
                    "null: docker.pids_limit"
                ),
            },
        },
    },
    "backup": {
        "type": "object",
        "description": (
            "off-site backups of the volumes ([backup]): hooks run with exec in one running "
            "instance, pre before the volumes are read, post after (always); a string is "
            "run with /bin/sh -c, a list is an argv"
        ),
        "properties": {
            "hooks": {
                "type": "object",
                "properties": {
                    "pre": {"$ref": "#/components/schemas/BackupHook"},
                    "post": {"$ref": "#/components/schemas/BackupHook"},
                },
            }
        },
    },
}


SPEC_SCHEMAS: dict[str, Any] = {
    "DeploymentSpec": {
        "type": "object",
        "description": "A validated spec, as stored (every field present).",
        "required": [
            "name",
            "registry",
            "image",
            "tag",
            "ports",
            "env",
            "scale",
            "resources",
            "deploy_on_create",
            "region",
        ],
        "properties": {
            "name": {"type": "string"},
            "registry": {"type": "string"},
            "image": {"type": "string"},
            "tag": {"type": "string"},
            "ports": _PORTS_SCHEMA,
            "env": _ENV_SCHEMA,
            "scale": _SCALE_SCHEMA,
            "resources": _RESOURCES_SCHEMA,
            "deploy_on_create": {"type": "boolean"},
            "region": {"type": "string"},
            "startup_probe": {**_PROBE_SCHEMA, "nullable": True},
            **_SPEC_EXTRAS,
            "liveness_probe": {**_PROBE_SCHEMA, "nullable": True},
        },
    },
    "CreateDeployment": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "image", "ports"],
        "properties": {
            "name": {
                "type": "string",
                "minLength": 2,
                "maxLength": 64,
                "pattern": spec.NAME_RE.pattern,
            },
            "registry": {"type": "string", "default": spec.DEFAULT_REGISTRY},
            "image": {
                "type": "string",
                "maxLength": 255,
                "description": "repository only (no tag or digest), e.g. library/nginx",
            },
            "tag": {"type": "string", "pattern": spec.TAG_RE.pattern, "default": "latest"},
            "ports": _PORTS_SCHEMA,
            "env": _ENV_SCHEMA,
            "scale": _SCALE_SCHEMA,
            "resources": _RESOURCES_SCHEMA,
            "deploy_on_create": {
                "type": "boolean",
                "default": True,
                "description": "false: create only (status created); start it later",
            },
            "region": {"type": "string", "description": "defaults to this node's region"},
            "startup_probe": _PROBE_SCHEMA,
            **_SPEC_EXTRAS,
            "liveness_probe": _PROBE_SCHEMA,
        },
    },
    "UpdateDeployment": {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "Partial update: given fields replace the current ones (scale and resources "
            "merge per key; env and ports are replaced whole). name, image, tag, registry, "
            "region and deploy_on_create may be repeated unchanged but never changed."
        ),
        "properties": {
            "ports": _PORTS_SCHEMA,
            "env": _ENV_SCHEMA,
            "scale": _SCALE_SCHEMA,
            "resources": _RESOURCES_SCHEMA,
            "startup_probe": {**_PROBE_SCHEMA, "nullable": True, "description": "null removes it"},
            **_SPEC_EXTRAS,
            "liveness_probe": {**_PROBE_SCHEMA, "nullable": True, "description": "null removes it"},
            "name": {"type": "string"},
            "image": {"type": "string"},
            "tag": {"type": "string"},
            "registry": {"type": "string"},
            "region": {"type": "string"},
            "deploy_on_create": {"type": "boolean"},
        },
    },
}
