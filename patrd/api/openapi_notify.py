"""OpenAPI entries of ``/v1/notifications`` and ``/v1/node`` (merged by patrd/api/openapi.py)."""

from __future__ import annotations

from typing import Any

from patrd.notify.rules import KINDS
from patrd.notify.targets import TargetType


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


_ERRORS = {"401": _error("Unauthorized"), "500": _error("Internal"), "503": _error("Unavailable")}
_JSON = "application/json"
_NOTIFICATION_PARAM = {
    "name": "notification",
    "in": "path",
    "required": True,
    "description": "the notification target's name",
    "schema": {"type": "string"},
}
_BYTES = {"type": "integer", "format": "int64"}

SCHEMAS: dict[str, Any] = {
    "NotificationTarget": {
        "type": "object",
        "description": (
            "A notification target. webhook: JSON POST, signed with "
            "X-Patrd-Signature: sha256=<hex HMAC-SHA256(key, body)> when `secret` names a "
            'vault secret. slack: {"text": ...} to an incoming webhook. email: SMTP. '
            "Secret fields name vault secrets; values are never accepted nor shown."
        ),
        "required": ["name", "type"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"},
            "type": {"type": "string", "enum": [t.value for t in TargetType]},
            "events": {
                "type": "array",
                "items": {"type": "string", "enum": ["*", *KINDS]},
                "description": "kinds, '*' or a prefix such as 'rollout.*' (default ['*'])",
            },
            "timeout_s": {"type": "number", "default": 5},
            "url": {
                "type": "string",
                "description": (
                    "webhook, slack. Answers mask it: no user info or query; "
                    "a Slack URL's path (its token) shows as /…"
                ),
            },
            "url_secret": {
                "type": "string",
                "nullable": True,
                "description": "instead of url: a secret holding the URL",
            },
            "secret": {"type": "string", "nullable": True, "description": "webhook HMAC key"},
            "smtp_host": {"type": "string"},
            "smtp_port": {"type": "integer", "default": 25},
            "starttls": {"type": "boolean", "default": False},
            "username": {"type": "string", "nullable": True},
            "password_secret": {"type": "string", "nullable": True},
            "mail_from": {"type": "string"},
            "mail_to": {"type": "array", "items": {"type": "string"}},
        },
    },
    "NotificationTargetStatus": {
        "allOf": [
            _ref("NotificationTarget"),
            {
                "type": "object",
                "properties": {
                    "source": {"type": "string", "enum": ["config", "api"]},
                    "sent": {"type": "integer"},
                    "failed": {"type": "integer"},
                    "retries": {"type": "integer"},
                },
            },
        ]
    },
    "NotificationList": {
        "type": "object",
        "properties": {
            "notifications": {"type": "array", "items": _ref("NotificationTargetStatus")},
            "kinds": {"type": "object", "additionalProperties": {"type": "string"}},
            "queued": {"type": "integer"},
            "dropped": {"type": "integer"},
        },
    },
    "Node": {
        "type": "object",
        "description": "the host as psutil reads it; bytes unless named otherwise",
        "properties": {
            "at": {"type": "number"},
            "cpu": {
                "type": "object",
                "properties": {"percent": {"type": "number"}, "count": {"type": "integer"}},
            },
            "load": {"type": "object", "additionalProperties": {"type": "number"}},
            "memory": {"type": "object", "additionalProperties": {"type": "number"}},
            "swap": {"type": "object", "additionalProperties": {"type": "number"}},
            "disks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string", "description": "docker, data or a path"},
                        "path": {"type": "string"},
                        "mount": {"type": "string"},
                        "total": _BYTES,
                        "used": _BYTES,
                        "free": _BYTES,
                        "used_percent": {"type": "number"},
                        "free_percent": {"type": "number"},
                    },
                },
            },
            "missing": {"type": "array", "items": {"type": "string"}},
            "network": {"type": "object", "additionalProperties": _BYTES},
            "boot_time": {"type": "number"},
            "uptime_s": {"type": "number"},
            "thresholds": {"type": "object", "additionalProperties": {"type": "number"}},
            "alerts": {"type": "array", "items": {"type": "string"}},
            "events": {"type": "array", "items": _ref("NodeEvent")},
        },
    },
    "NodeEvent": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string", "example": "disk.low"},
            "message": {"type": "string"},
        },
    },
}

PATHS: dict[str, Any] = {
    "/v1/notifications": {
        "get": {
            "operationId": "list_notifications",
            "summary": "notification targets ([[notify]] and runtime), with delivery counts",
            "responses": {
                "200": {
                    "description": "the targets and the kinds",
                    "content": {_JSON: {"schema": _ref("NotificationList")}},
                },
                **_ERRORS,
            },
        },
        "post": {
            "operationId": "create_notification",
            "summary": "add a runtime notification target (stored)",
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": _ref("NotificationTarget")}},
            },
            "responses": {
                "201": {
                    "description": "created",
                    "content": {_JSON: {"schema": _ref("NotificationTargetStatus")}},
                },
                "400": _error("BadRequest"),
                "409": _error("Conflict"),
                "413": _error("TooLarge"),
                "422": _error("Invalid"),
                **_ERRORS,
            },
        },
    },
    "/v1/notifications/{notification}": {
        "parameters": [_NOTIFICATION_PARAM],
        "delete": {
            "operationId": "delete_notification",
            "summary": "remove a runtime target (409 for one from the config file)",
            "responses": {
                "204": {"description": "removed"},
                "404": _error("NotFound"),
                "409": _error("Conflict"),
                **_ERRORS,
            },
        },
    },
    "/v1/notifications/{notification}/test": {
        "parameters": [_NOTIFICATION_PARAM],
        "post": {
            "operationId": "test_notification",
            "summary": "queue a notify.test notification to this target",
            "responses": {
                "202": {"description": "queued; delivery is asynchronous"},
                "404": _error("NotFound"),
                **_ERRORS,
            },
        },
    },
    "/v1/node": {
        "get": {
            "operationId": "node",
            "summary": "host CPU, memory, swap, load, disks, network; thresholds; node events",
            "parameters": [
                {
                    "name": "events",
                    "in": "query",
                    "required": False,
                    "description": "how many of the newest node events (0..1000, default 20)",
                    "schema": {"type": "integer", "default": 20},
                }
            ],
            "responses": {
                "200": {
                    "description": "a fresh reading",
                    "content": {_JSON: {"schema": _ref("Node")}},
                },
                "400": _error("BadRequest"),
                **_ERRORS,
            },
        }
    },
}
