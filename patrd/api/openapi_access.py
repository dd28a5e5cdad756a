"""OpenAPI entries of ``/v1/tokens`` and ``/v1/audit`` (patrd/api/access.py).

Merged into the document by ``patrd/api/openapi.py``; kept apart so that the
access routes and their description change together.
"""

from __future__ import annotations

from typing import Any

from patrd.model.scopes import DURATION_PATTERN

JSON = "application/json"
_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_NULLABLE_TIME = {**_TIME, "nullable": True}
_SCOPE = {"type": "string", "enum": ["read", "deploy", "write", "admin"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_ERRORS = {
    "401": _error("Unauthorized"),
    "403": _error("Forbidden"),
    "500": _error("Internal"),
    "503": _error("Unavailable"),
}

ACCESS_PATHS: dict[str, Any] = {
    "/v1/tokens": {
        "get": {
            "operationId": "list_tokens",
            "summary": "Scoped API tokens (admin scope; never the token values)",
            "responses": {"200": _body("TokenList", "the tokens"), **_ERRORS},
        },
        "post": {
            "operationId": "create_token",
            "summary": "Create a scoped token (admin scope); the answer shows it, once",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("CreateToken")}}},
            "responses": {
                "201": _body("NewToken", "created; `token` is shown only here"),
                "400": _error("BadRequest"),
                "409": _error("Conflict"),
                "422": _error("Invalid"),
                **_ERRORS,
            },
        },
    },
    "/v1/tokens/{name}": {
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "token name",
                "schema": {"type": "string"},
            }
        ],
        "delete": {
            "operationId": "revoke_token",
            "summary": "Revoke a token (admin scope); it stops working at once",
            "responses": {
                "200": {
                    "description": "revoked",
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["revoked"],
                                "properties": {"revoked": {"type": "string"}},
                            }
                        }
                    },
                },
                "404": _error("NotFound"),
                **_ERRORS,
            },
        },
    },
    "/v1/audit": {
        "get": {
            "operationId": "list_audit",
            "summary": "The audit log of API calls (admin scope), oldest first",
            "description": (
                "Every call that is not a read, and every refused call (401, 403), with who "
                "made it, the method, the path, the deployment it names and the status. "
                "Bodies are never recorded. Kept 90 days, at most 100000 entries."
            ),
            "parameters": [
                _query("since", "RFC 3339 time, or a duration back from now (1h, 7d)"),
                _query("who", "exactly: uid:1000, token:NAME, token_file, dashboard:ADDR"),
                _query("deployment", "calls naming this deployment"),
                {
                    **_query("limit", "the newest N entries, 1..1000 (default 100)"),
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
            "responses": {
                "200": _body("AuditList", "the entries"),
                "400": _error("BadRequest"),
                **_ERRORS,
            },
        }
    },
}

_TOKEN_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "scope": _SCOPE,
    "deployments": {
        "type": "array",
        "items": {"type": "string"},
        "nullable": True,
        "description": "the deployments it may act on; null: all",
    },
    "created_at": _TIME,
    "expires_at": _NULLABLE_TIME,
    "expired": {"type": "boolean"},
    "last_used_at": {**_NULLABLE_TIME, "description": "to the minute"},
}

ACCESS_SCHEMAS: dict[str, Any] = {
    "CreateToken": {
        "type": "object",
        "required": ["name", "scope"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"},
            "scope": _SCOPE,
            "expires_in": {
                "type": "string",
                "example": "30d",
                "description": "s, m, h, d, w; at most ten years",
                "pattern": DURATION_PATTERN,
            },
            "deployments": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "limit the token to these deployments (not for admin)",
            },
        },
    },
    "Token": {
        "type": "object",
        "required": list(_TOKEN_PROPERTIES),
        "properties": _TOKEN_PROPERTIES,
    },
    "NewToken": {
        "type": "object",
        "required": [*_TOKEN_PROPERTIES, "token"],
        "properties": {
            **_TOKEN_PROPERTIES,
            "token": {"type": "string", "description": "the bearer token; shown only once"},
        },
    },
    "TokenList": {
        "type": "object",
        "required": ["tokens"],
        "properties": {"tokens": {"type": "array", "items": _ref("Token")}},
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "at", "who", "method", "path", "deployment", "status", "detail"],
        "properties": {
            "id": {"type": "integer"},
            "at": _TIME,
            "who": {"type": "string", "example": "token:ci"},
            "method": {"type": "string"},
            "path": {"type": "string", "description": "without the query string"},
            "deployment": {"type": "string", "nullable": True},
            "status": {"type": "integer", "description": "the HTTP status answered"},
            "detail": {"type": "string", "description": "why a call was refused"},
        },
    },
    "AuditList": {
        "type": "object",
        "required": ["entries"],
        "properties": {"entries": {"type": "array", "items": _ref("AuditEntry")}},
    },
}
