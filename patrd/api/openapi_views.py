"""The Error schema, the secret request bodies and the views of patrd/model/view_shapes.py."""

from __future__ import annotations

from typing import Any

from patrd.api.errors import ERROR_TABLE, HTTP_CODES
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
    **view_schemas(),
}
