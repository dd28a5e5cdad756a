"""OpenAPI entries of ``/v1/nodes`` (merged by patrd/api/openapi.py; patrd/api/nodes.py)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


_JSON = "application/json"
_ERRORS = {
    "401": _error("Unauthorized"),
    "403": _error("Forbidden"),
    "500": _error("Internal"),
    "503": _error("Unavailable"),
}
_NODE_PARAM = {
    "name": "node",
    "in": "path",
    "required": True,
    "description": "the node's ID, a unique ID prefix, or its hostname",
    "schema": {"type": "string"},
}

SCHEMAS: dict[str, Any] = {
    "ClusterNode": {
        "type": "object",
        "description": (
            "A node instances run on: every swarm node (engine.backend = swarm), "
            "else this node alone (role 'standalone')."
        ),
        "required": [
            "id",
            "hostname",
            "address",
            "role",
            "leader",
            "state",
            "availability",
            "cpus",
            "memory_bytes",
            "labels",
            "instances",
        ],
        "properties": {
            "id": {"type": "string"},
            "hostname": {"type": "string"},
            "address": {
                "type": "string",
                "nullable": True,
                "description": "where patrd's proxy reaches its instances (null: standalone)",
            },
            "role": {"type": "string", "enum": ["manager", "worker", "standalone"]},
            "leader": {"type": "boolean"},
            "state": {"type": "string", "description": "ready, down, unknown, disconnected"},
            "availability": {"type": "string", "enum": ["active", "pause", "drain"]},
            "cpus": {"type": "number"},
            "memory_bytes": {"type": "integer", "format": "int64"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "instances": {"type": "integer", "description": "patrd instances placed on it"},
            "agent": {
                "type": "string",
                "nullable": True,
                "description": (
                    "swarm: where its instances' CPU/RAM figures come from: local (the "
                    "manager reads them), ok (its patrd agent answered), away (it did not, "
                    "or refused the token: no figures), unknown (not asked yet); null on "
                    "the docker backend"
                ),
            },
        },
    },
    "ClusterNodeList": {
        "type": "object",
        "required": ["nodes"],
        "properties": {"nodes": {"type": "array", "items": _ref("ClusterNode")}},
    },
}


def _change(operation: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "parameters": [_NODE_PARAM],
            "responses": {
                "200": {
                    "description": "the node after the change",
                    "content": {_JSON: {"schema": _ref("ClusterNode")}},
                },
                "404": _error("NotFound"),
                "409": _error("Conflict"),
                **_ERRORS,
            },
        }
    }


PATHS: dict[str, Any] = {
    "/v1/nodes": {
        "get": {
            "operationId": "listNodes",
            "summary": "the nodes instances run on, with their resources and instance counts",
            "responses": {
                "200": {
                    "description": "every node",
                    "content": {_JSON: {"schema": _ref("ClusterNodeList")}},
                },
                **_ERRORS,
            },
        }
    },
    "/v1/nodes/{node}/drain": _change(
        "drainNode",
        "take the node's instances out of the proxy pools, wait for their requests, then "
        "drain it: Swarm starts them on the other nodes (409 on the docker backend)",
    ),
    "/v1/nodes/{node}/activate": _change(
        "activateNode", "let Swarm place instances on the node again (409 on the docker backend)"
    ),
}
