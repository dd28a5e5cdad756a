"""Pinned releases: redeploy, revert by REF, the history of releases."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import COMMON_ERRORS, NAME_PARAM, error, json_body, ref

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
RELEASE_SCHEMAS: dict[str, Any] = {
    # HistoryEntry and Redeployed are views (patrd/model/view_shapes.py).
    "RevertRequest": _REVERT_REQUEST,
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
