"""The views the API answers with: errors, deployments, instances, events, secrets."""

from __future__ import annotations

from typing import Any

from patrd.api.errors import ERROR_TABLE, HTTP_CODES
from patrd.api.openapi_kit import TIMESTAMP, ref
from patrd.model.deployment import Intent, Status

_COST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["min", "max", "currency", "period"],
    "description": "estimated cost per month at scale.min and scale.max (config [cost])",
    "properties": {
        "min": {"type": "number"},
        "max": {"type": "number"},
        "currency": {"type": "string"},
        "period": {"type": "string", "enum": ["month"]},
    },
}
_RESOURCE_PAIR = {
    "type": "object",
    "properties": {"cpu": {"type": "number"}, "memory_mb": {"type": "integer"}},
}
_CAPACITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["fits", "node", "required", "committed", "warning"],
    "description": (
        "whether this node has CPUs and memory for this deployment's instances next to the "
        "running instances of the others (a warning, never a refusal; one instance larger "
        "than the node is refused with 422 on resources.cpu / resources.memory_mb). "
        "warning is set only on the create or update that over-commits the node"
    ),
    "properties": {
        "fits": {"type": "boolean"},
        "node": _RESOURCE_PAIR,
        "required": _RESOURCE_PAIR,
        "committed": _RESOURCE_PAIR,
        "warning": {"type": "string", "nullable": True},
    },
}

# Codes answered outside the two tables: an unexpected error, the backup repository.
_OTHER_CODES = ("internal", "backup_unavailable")


def error_codes() -> list[str]:
    """Every ``error`` code the API answers: the error tables' rows, not a copy of them."""
    codes = {m.code for m in ERROR_TABLE.values()} | set(HTTP_CODES.values())
    return sorted(codes | set(_OTHER_CODES))


VIEW_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "description": "machine-readable code",
                "enum": error_codes(),
            },
            "message": {"type": "string", "description": "for humans"},
            "field": {
                "type": "string",
                "description": "path of the offending input, e.g. ports.70000 or confirm",
            },
            "needed_scope": {
                "type": "string",
                "enum": ["read", "deploy", "write", "admin"],
                "description": "on 403: the scope this call needs",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "problems"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": "e.g. the proxy listeners are closed: the firewall is not loaded",
            },
        },
    },
    "RegistryLogin": {
        "type": "object",
        "description": "How to log Docker in to the node registry (README: Security).",
        "required": ["registry", "auth", "username", "password_file", "login"],
        "properties": {
            "registry": {"type": "string", "description": "host:port to push to"},
            "auth": {
                "type": "string",
                "enum": ["generated", "htpasswd_file", "none"],
                "description": "who holds the credential",
            },
            "username": {"type": "string", "nullable": True},
            "password_file": {
                "type": "string",
                "nullable": True,
                "description": "0600 file with the password (never the password itself)",
            },
            "login": {"type": "string", "nullable": True, "description": "a shell line"},
        },
    },
    "Firewall": {
        "type": "object",
        "description": "patrd's nftables table (README: Security).",
        "required": ["enabled", "applied", "ruleset", "counters", "error", "applied_at", "loads"],
        "properties": {
            "enabled": {"type": "boolean", "description": "firewall.enabled"},
            "applied": {
                "type": "boolean",
                "description": "the kernel holds exactly this ruleset now",
            },
            "ruleset": {
                "type": "string",
                "description": (
                    "table inet patrd as loaded with nft -f (when disabled: what would be loaded)"
                ),
            },
            "counters": {
                "type": "object",
                "description": (
                    "named counters since the daemon started: "
                    "rate_limited, conn_limited, api_denied, container_denied, "
                    "isolation_denied, invalid, input_default"
                ),
                "additionalProperties": {
                    "type": "object",
                    "required": ["packets", "bytes"],
                    "properties": {
                        "packets": {"type": "integer"},
                        "bytes": {"type": "integer"},
                    },
                },
            },
            "error": {
                "type": "string",
                "nullable": True,
                "description": "why the last load or check failed",
            },
            "applied_at": {**TIMESTAMP, "nullable": True},
            "loads": {"type": "integer", "description": "loads since the daemon started"},
        },
    },
    "Instance": {
        "type": "object",
        "required": [
            "name",
            "container_id",
            "revision",
            "slot",
            "state",
            "ready",
            "address",
            "restarts",
        ],
        "properties": {
            "name": {"type": "string", "example": "web-0"},
            "container_id": {"type": "string"},
            "revision": {"type": "integer"},
            "slot": {"type": "integer"},
            "state": {"type": "string", "description": "Docker container state"},
            "ready": {"type": "boolean", "description": "in the proxy pool"},
            "address": {"type": "string", "nullable": True},
            "restarts": {"type": "integer"},
            "current": {
                "type": "boolean",
                "description": "built from the target revision (false: being replaced)",
            },
            "probe": {
                "type": "object",
                "required": ["phase", "last", "liveness_failures"],
                "properties": {
                    "phase": {
                        "type": "string",
                        "enum": ["", "starting", "ready", "failed", "unhealthy"],
                    },
                    "last": {"type": "string", "description": "last result, e.g. 200"},
                    "liveness_failures": {"type": "integer", "minimum": 0},
                },
            },
            "waiting_for": {
                "type": "string",
                "description": "the node (hostname and ID) holding this instance's volume data "
                "that it waits for while that node is drained, down or unreachable (swarm); "
                "empty when it does not wait",
            },
        },
    },
    "PushResult": {
        "type": "object",
        "required": ["pushes", "rollouts"],
        "properties": {
            "pushes": {"type": "integer", "description": "manifest pushes with a tag"},
            "rollouts": {"type": "array", "items": {"type": "string"}},
        },
    },
    "VolumeList": {
        "type": "object",
        "required": ["volumes"],
        "properties": {
            "volumes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "volume", "instance", "path", "size_gb", "used_bytes"],
                    "properties": {
                        "name": {"type": "string"},
                        "volume": {"type": "string", "description": "the Docker volume"},
                        "instance": {"type": "integer"},
                        "path": {"type": "string"},
                        "size_gb": {"type": "integer"},
                        "used_bytes": {"type": "integer"},
                    },
                },
            }
        },
    },
    "Secret": {
        "type": "object",
        "required": ["name", "version", "created_at", "updated_at", "used_by"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer", "description": "grows on every PUT"},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "used_by": {"type": "array", "items": {"type": "string"}},
        },
    },
    "SecretList": {
        "type": "object",
        "required": ["secrets"],
        "properties": {"secrets": {"type": "array", "items": ref("Secret")}},
    },
    "CreateSecret": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "value"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
            "value": {"type": "string", "maxLength": 65536, "writeOnly": True},
        },
    },
    "SecretValue": {
        "type": "object",
        "additionalProperties": False,
        "required": ["value"],
        "properties": {"value": {"type": "string", "maxLength": 65536, "writeOnly": True}},
    },
    "Deleted": {
        "type": "object",
        "required": ["deleted"],
        "properties": {"deleted": {"type": "string"}},
    },
    "History": {
        "type": "object",
        "required": ["history"],
        "properties": {"history": {"type": "array", "items": ref("HistoryEntry")}},
    },
    "Deployment": {
        "type": "object",
        "required": [
            "id",
            "name",
            "revision",
            "status",
            "status_reason",
            "intent",
            "created_at",
            "updated_at",
            "spec",
            "urls",
            "estimated_cost",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "revision": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "status_reason": {
                "type": "string",
                "description": (
                    "why: e.g. 'crash loop: instance 0 failed to start 3 times (…)' or the "
                    "engine's refusal to start an instance, with status errored"
                ),
            },
            "intent": {"type": "string", "enum": [i.value for i in Intent]},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "spec": ref("DeploymentSpec"),
            "stable_revision": {
                "type": "integer",
                "nullable": True,
                "description": "the last revision that finished rolling out",
            },
            "urls": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "instances": {
                "type": "array",
                "items": ref("Instance"),
                "description": "present on GET (list and single)",
            },
            "replicas": {
                "type": "integer",
                "description": (
                    "instances it runs: the autoscaler's count within [min, max], else min"
                ),
            },
            "estimated_cost": _COST_SCHEMA,
            "capacity": {**_CAPACITY_SCHEMA, "description": "on create, update and GET of one"},
        },
    },
    "DeploymentList": {
        "type": "object",
        "required": ["deployments"],
        "properties": {
            "deployments": {"type": "array", "items": ref("Deployment")},
            "next": {
                "type": "string",
                "nullable": True,
                "description": "paged requests only: the after of the next page, null at the end",
            },
        },
    },
    "InstanceList": {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "items": ref("Instance")}},
    },
    "Event": {
        "type": "object",
        "required": ["id", "at", "kind", "message", "revision"],
        "properties": {
            "id": {"type": "integer", "description": "increasing; use as ?after="},
            "at": TIMESTAMP,
            "kind": {"type": "string", "example": "status"},
            "message": {"type": "string"},
            "revision": {"type": "integer", "nullable": True},
        },
    },
    "EventList": {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": ref("Event")}},
    },
}
