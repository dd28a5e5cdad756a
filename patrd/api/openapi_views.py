"""The views the API answers with: errors, health, firewall and those of model/view_shapes.py."""

from __future__ import annotations

from typing import Any

from patrd.api.errors import ERROR_TABLE, HTTP_CODES
from patrd.api.openapi_kit import TIMESTAMP
from patrd.model.view_shapes import view_schemas

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
    **view_schemas(),
}
