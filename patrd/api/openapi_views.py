"""The Error schema, the secret request bodies and the views of patrd/model/view_shapes.py."""

from __future__ import annotations

from typing import Any

from patrd.api.errors import ErrorJson
from patrd.model.typed_schema import schema_of
from patrd.model.view_shapes import view_schemas

VIEW_SCHEMAS: dict[str, Any] = {
    "Error": schema_of(ErrorJson),
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
