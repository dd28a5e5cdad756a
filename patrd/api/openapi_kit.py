"""Building blocks of the OpenAPI document: references, bodies, the shared answers."""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


NAME_PARAM = {"$ref": "#/components/parameters/name"}

# Errors any authenticated route may answer.
COMMON_ERRORS = {
    "401": error("Unauthorized"),
    "403": error("Forbidden"),
    "500": error("Internal"),
    "503": error("Unavailable"),
}
BODY_ERRORS = {
    "400": error("BadRequest"),
    "413": error("TooLarge"),
    "422": error("Invalid"),
}

TIMESTAMP = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
NULLABLE_TIME = {**TIMESTAMP, "nullable": True}


def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


RESPONSES: dict[str, Any] = {
    "BadRequest": _error_response("malformed request (JSON, Content-Type, query parameter)"),
    "Unauthorized": {
        **_error_response("missing or invalid bearer token (TCP listener only)"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": _error_response(
        "refused: the caller's scope does not allow this call (needed_scope names the scope "
        "needed; README: API tokens, scopes and the audit log), a missing or wrong CSRF token "
        "of a dashboard session, or a route served on the unix socket only"
    ),
    "NotFound": _error_response("no such deployment or route"),
    "Conflict": _error_response("the deployment's state forbids the change"),
    "TooLarge": _error_response("request body larger than api.max_body_bytes"),
    "Invalid": _error_response("the body failed validation; field names the input"),
    "Internal": _error_response("unexpected error; details are in the daemon log"),
    "Unavailable": _error_response("the database or the Docker engine is unavailable"),
}

PARAMETERS: dict[str, Any] = {
    "name": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "deployment name",
        "schema": {"type": "string"},
    },
}
