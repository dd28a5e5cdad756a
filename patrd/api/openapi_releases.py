"""Pinned releases: redeploy, revert by REF, the history of releases."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import COMMON_ERRORS, NAME_PARAM, TIMESTAMP, error, json_body, ref

_HISTORY_ENTRY: dict[str, Any] = {
    "type": "object",
    "required": [
        "revision",
        "digest",
        "image_id",
        "image",
        "tag",
        "how",
        "release",
        "state",
        "reason",
        "created_at",
    ],
    "properties": {
        "revision": {"type": "integer"},
        "digest": {
            "type": "string",
            "nullable": True,
            "description": "registry manifest digest (sha256:…) the revision runs, if any",
        },
        "digest_ref": {
            "type": "string",
            "nullable": True,
            "description": "repo@sha256:… pullable reference (what a revert re-pulls by)",
        },
        "image_id": {"type": "string", "nullable": True, "description": "local image id"},
        "image": {"type": "string"},
        "tag": {"type": "string"},
        "how": {
            "type": "string",
            "enum": ["create", "push", "poll", "redeploy", "revert", "settings"],
            "description": "how the revision came by its image; settings: the previous one's",
        },
        "release": {"type": "boolean", "description": "false for settings-only revisions"},
        "changes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "what changed since the next older entry, in words (names, never "
            "env or file values); empty for the oldest",
        },
        "state": {
            "type": "string",
            "enum": ["pending", "deployed", "superseded", "failed"],
            "description": "pending: the target revision, not rolled out yet",
        },
        "reason": {"type": "string"},
        "created_at": TIMESTAMP,
        "deployed_at": {**TIMESTAMP, "nullable": True},
    },
}
_REVERT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["ref"],
    "properties": {
        "ref": {
            "oneOf": [{"type": "string"}, {"type": "integer"}],
            "description": (
                "a revision number, a manifest digest (sha256:…, repo@sha256:…) or an image "
                "id, or a prefix of at least 12 hex characters"
            ),
        }
    },
}
_REDEPLOYED: dict[str, Any] = {
    "allOf": [
        ref("Deployment"),
        {
            "type": "object",
            "required": ["redeploy"],
            "properties": {
                "redeploy": {
                    "type": "object",
                    "required": ["changed", "digest", "image_id", "message"],
                    "properties": {
                        "changed": {"type": "boolean"},
                        "digest": {"type": "string", "nullable": True},
                        "image_id": {
                            "type": "string",
                            "nullable": True,
                            "description": "null when known by digest only (pulled at rollout)",
                        },
                        "message": {"type": "string"},
                        "warning": {"type": "string", "nullable": True},
                    },
                }
            },
        },
    ]
}
RELEASE_SCHEMAS: dict[str, Any] = {
    "HistoryEntry": _HISTORY_ENTRY,
    "RevertRequest": _REVERT_REQUEST,
    "Redeployed": _REDEPLOYED,
}
RELEASE_PATHS: dict[str, Any] = {
    "/v1/deployments/{name}/redeploy": {
        "parameters": [NAME_PARAM],
        "post": {
            "operationId": "redeploy_deployment",
            "summary": "Pull the tag; a new digest rolls out as a new pinned revision",
            "responses": {
                "200": json_body("Redeployed", "already at that digest: nothing changed"),
                "202": json_body("Redeployed", "a new revision pins the new image"),
                "404": error("NotFound"),
                "409": error("Conflict"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/revert": {
        "parameters": [NAME_PARAM],
        "post": {
            "operationId": "revert_by_ref",
            "summary": "Go back to an image of the history (pulled by digest if gone)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("RevertRequest")}},
            },
            "responses": {
                "202": json_body("Deployment", "the new revision"),
                "400": error("BadRequest"),
                "404": error("NotFound"),
                "409": error("Conflict"),
                "422": error("Invalid"),
                **COMMON_ERRORS,
            },
        },
    },
}
