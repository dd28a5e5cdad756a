"""A deployment's request shapes, declared once: the API checks them, the document states them.

Pure data. The limits (``MAX_SCALE``…) and the declared shapes of a create,
a patch and their parts (patrd/model/shape.py) are what patrd/model/spec.py
validates with and what patrd/api/openapi_spec.py publishes. Rules between
fields stay in patrd/model/spec_fields.py.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from patrd.model import cron
from patrd.model.shape import Bool, Int, Num, Obj, Raw, Str

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


DEFAULT_TARGET_CPU = 80  # percent of the instances' CPU allocation (autoscaler)
MIN_TARGET_CPU = 10
MAX_TARGET_CPU = 100

MAX_HOOK_ARGS = 64
MAX_HOOK_BYTES = 16 * 1024


# --- declared shapes -----------------------------------------------------

PORTS = Raw(
    {
        "type": "object",
        "description": (
            'Container port (a decimal string, "1".."65535") → protocol. '
            "Each HTTP port is served at http://<port>-<name>.<base_domain>."
        ),
        "minProperties": 1,
        "additionalProperties": {"type": "string", "enum": [p.value for p in PortProtocol]},
        "example": {"80": "http"},
    }
)
ENV = Raw(
    {
        "type": "object",
        "description": (
            f"Environment variables; names match [A-Za-z_][A-Za-z0-9_]*, at most "
            f"{MAX_ENV_VARS}, values at most {MAX_ENV_VALUE_BYTES} bytes; a value is a "
            'string or {"secret": NAME}. Reserved: ' + ", ".join(sorted(RESERVED_ENV))
        ),
        "maxProperties": MAX_ENV_VARS,
        "additionalProperties": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["secret"],
                    "properties": {"secret": {"type": "string"}},
                },
            ]
        },
    }
)
SCALE = Obj(
    {
        "min": Int(1, MAX_SCALE, default=1),
        "max": Int(1, MAX_SCALE, description="at least min; defaults to max(current max, min)"),
        "target_cpu": Int(
            MIN_TARGET_CPU,
            MAX_TARGET_CPU,
            default=DEFAULT_TARGET_CPU,
            description=(
                "autoscaler target: percent of the instances' CPU allocation (used when "
                "max > min and the deployment has no volumes)"
            ),
            range_message=(
                f"must be a percentage of the CPU allocation from {MIN_TARGET_CPU} to "
                f"{MAX_TARGET_CPU}, e.g. 80"
            ),
        ),
    }
)
RESOURCES = Obj(
    {
        "cpu": Num(
            MIN_CPU,
            MAX_CPU,
            default=1.0,
            type_message="must be a number of CPUs, e.g. 0.5",
            range_message=f"must be from {MIN_CPU} to {MAX_CPU}",
        ),
        "memory_mb": Int(MIN_MEMORY_MB, MAX_MEMORY_MB, default=512),
    }
)
# A probe's path: starts with "/", no spaces or control characters.
PROBE_PATH_RE = r"/[^\s\x00-\x20\x7f]*"
PROBE = Obj(
    {
        "port": Int(description="one of the deployment's http ports"),
        "path": Str(PROBE_PATH_RE, max_length=MAX_PROBE_PATH, default="/"),
        "period_s": Num(0.1, 3600, default=10),
        "timeout_s": Num(0.1, 60, default=3),
        "failure_threshold": Int(1, 1000, default=15),
    },
    required=("port",),
    description="HTTP GET from the daemon; 200-399 within timeout_s passes",
)
SECRET_REF = Obj(
    {"secret": Str(SECRET_NAME_RE.pattern)},
    required=("secret",),
    description='pull credentials: {"secret": NAME} holding username:password',
    nullable=True,
)
SECURITY = Obj(
    {
        "extra_capabilities": Raw(
            {
                "type": "array",
                "items": {"type": "string"},
                "description": "only from security.allowed_capabilities; never SYS_ADMIN & co.",
            }
        ),
        "pids_limit": Int(
            0,
            1_000_000,
            nullable=True,
            range_message="must be from 0 (no limit) to 1000000",
            description=(
                "security.pids_min..pids_max (0 only in specs stored before the policy); "
                "null: docker.pids_limit"
            ),
        ),
    },
    description=(
        "the explicit override of the hardening defaults, within the operator's "
        "[security] policy (README: Trust boundaries); outside it: 422"
    ),
)
VOLUME = Obj(
    {
        "path": Str(description="absolute, not /, not under /etc/config"),
        "size_gb": Int(1, MAX_VOLUME_GB),
    },
    required=("path", "size_gb"),
)
VOLUMES = Raw(
    {
        "type": "object",
        "description": "volume name -> one Docker volume per instance",
        "maxProperties": MAX_VOLUMES,
        "additionalProperties": VOLUME.schema(),
    }
)
HOOK: dict[str, Any] = {"$ref": "#/components/schemas/BackupHook"}
BACKUP = Obj(
    {"hooks": Obj({"pre": Raw(HOOK), "post": Raw(HOOK)})},
    description=(
        "off-site backups of the volumes ([backup]): hooks run with exec in one running "
        "instance, pre before the volumes are read, post after (always); a string is "
        "run with /bin/sh -c, a list is an argv"
    ),
)
JOB = Obj(
    {
        "schedule": Str(
            description=(
                "five cron fields in the node's time zone, a macro (@hourly, @daily, "
                f"@weekly, @monthly, @yearly) or @every <n>s|m|h|d "
                f"({cron.MIN_EVERY_S}s to {cron.MAX_EVERY_S // 86400}d)"
            ),
            extra={"example": "0 3 * * *"},
        ),
        "command": Raw(
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_JOB_ARGS,
                "items": {"type": "string"},
                "description": 'argv, no shell (use ["sh", "-c", "..."] for one)',
            }
        ),
        "timeout_s": Int(1, MAX_JOB_TIMEOUT_S, default=DEFAULT_JOB_TIMEOUT_S),
    },
    required=("schedule", "command"),
)
JOBS = Raw(
    {
        "type": "object",
        "maxProperties": MAX_JOBS,
        "description": (
            "job name ([a-z0-9-], at most 40) -> a command run as a one-off on a schedule "
            "(README: Exec, one-off runs and jobs). Changing jobs restarts no instance."
        ),
        "additionalProperties": JOB.schema(),
    }
)
CONFIG_MOUNTS = Raw(
    {
        "type": "object",
        "description": f"file name in {CONFIG_DIR} -> content (base64)",
        "maxProperties": MAX_CONFIG_FILES,
        "additionalProperties": {"type": "string", "format": "byte"},
    }
)
NAME = Str(
    NAME_RE.pattern.removeprefix("^").removesuffix("$"),
    min_length=2,
    max_length=MAX_NAME,
    description="lowercase letters, digits and '-'; <port>-<name> is one DNS label",
)
# Fields a create and a patch share.
_COMMON: dict[str, Any] = {
    "ports": PORTS,
    "env": ENV,
    "scale": SCALE,
    "resources": RESOURCES,
    "deploy_on_push": Bool(default=True),
    "registry_auth": SECRET_REF,
    "security": SECURITY,
    "config_mounts": CONFIG_MOUNTS,
    "volumes": VOLUMES,
    "backup": BACKUP,
    "jobs": JOBS,
}
CREATE = Obj(
    {
        "name": NAME,
        "registry": Str(default=DEFAULT_REGISTRY, max_length=253),
        "image": Str(
            max_length=255,
            min_length=1,
            description="repository only (no tag or digest), e.g. library/nginx",
        ),
        "tag": Str(TAG_RE.pattern.removeprefix("^").removesuffix("$"), default="latest"),
        "deploy_on_create": Bool(
            default=True, description="false: create only (status created); start it later"
        ),
        "region": Str(description="defaults to this node's region"),
        "startup_probe": PROBE,
        "liveness_probe": PROBE,
        **_COMMON,
    },
    required=("name", "image", "ports"),
)
UPDATE = Obj(
    {
        **_COMMON,
        "startup_probe": PROBE.but(nullable=True, description="null removes it"),
        "liveness_probe": PROBE.but(nullable=True, description="null removes it"),
        # Immutable: may be repeated unchanged, never changed (IMMUTABLE_FIELDS).
        "name": Str(),
        "image": Str(),
        "tag": Str(),
        "registry": Str(),
        "region": Str(),
        "deploy_on_create": Bool(),
    },
    description=(
        "Partial update: given fields replace the current ones (scale and resources "
        "merge per key; env and ports are replaced whole). name, image, tag, registry, "
        "region and deploy_on_create may be repeated unchanged but never changed."
    ),
)
CREATE_FIELDS = frozenset(CREATE.fields)
UPDATE_FIELDS = frozenset(UPDATE.fields) - IMMUTABLE_FIELDS.keys()
PROBE_FIELDS = frozenset(PROBE.fields)
