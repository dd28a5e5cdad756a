"""The operations on deployments, secrets, instances, config files and events."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import (
    BODY_ERRORS,
    COMMON_ERRORS,
    JSON,
    NAME_PARAM,
    error,
    json_body,
    ref,
)
from patrd.model.contract import EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT
from patrd.model.spec_shapes import CONFIG_NAME_RE


def _deployment_op(
    op_id: str,
    summary: str,
    status: str,
    description: str,
    errors: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    responses: dict[str, Any] = {status: json_body("Deployment", description)}
    responses.update(errors or {})
    responses.update({"404": error("NotFound"), "409": error("Conflict"), **COMMON_ERRORS})
    return {"operationId": op_id, "summary": summary, "responses": responses, **extra}


PATHS: dict[str, Any] = {
    "/v1/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness of the API (no authentication)",
            "security": [],
            "responses": {"200": json_body("Health", "the daemon answers")},
        }
    },
    "/v1/firewall": {
        "get": {
            "operationId": "firewall",
            "summary": "The nftables ruleset patrd loads (dry run when disabled) and its counters",
            "responses": {"200": json_body("Firewall", "the firewall"), **COMMON_ERRORS},
        }
    },
    "/v1/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.0 document",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/backup": {
        "post": {
            "operationId": "create_backup",
            "summary": "Back up the data dir: a consistent snapshot as a tar (unix socket only)",
            "description": (
                "The database (SQLite online backup) and every other file of the data dir "
                "(secrets key, certificates) plus a manifest with sizes and sha256. It holds "
                "secrets: keep it private. Restore with `patrd restore FILE --data-dir DIR`."
            ),
            "responses": {
                "200": {
                    "description": "the backup",
                    "headers": {
                        "Content-Disposition": {"schema": {"type": "string"}},
                        "X-Patrd-Warning": {"schema": {"type": "string"}},
                    },
                    "content": {
                        "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                "403": error("Forbidden"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/deployments": {
        "get": {
            "operationId": "list_deployments",
            "summary": "All deployments, by name, with their instances",
            "description": (
                "Without limit or after: every deployment. With them: one page, by name, "
                "and next (the after of the following page; null on the last page)."
            ),
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "deployments per page (1 to 500)",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                },
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "description": "start after this deployment name (the previous page's next)",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": json_body("DeploymentList", "the deployments"),
                **COMMON_ERRORS,
            },
        },
        "post": {
            "operationId": "create_deployment",
            "summary": "Create a deployment (revision 1) and, by default, start it",
            "parameters": [
                {
                    "name": "dry_run",
                    "in": "query",
                    "required": False,
                    "description": (
                        "true: validate the body (fields, name taken, secrets exist) and "
                        "answer 200 with the spec, URLs, estimated cost and capacity; "
                        "nothing is stored"
                    ),
                    "schema": {"type": "boolean", "default": False},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("CreateDeployment")}},
            },
            "responses": {
                "200": json_body("DryRun", "dry run: the body is valid"),
                "201": {
                    **json_body("Deployment", "created"),
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                **BODY_ERRORS,
                "409": error("Conflict"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}": {
        "parameters": [NAME_PARAM],
        "get": _deployment_op(
            "get_deployment", "One deployment with its instances", "200", "the deployment"
        ),
        "patch": _deployment_op(
            "update_deployment",
            "Change ports, env, scale or resources (a new revision when anything changed)",
            "200",
            "the deployment after the change",
            errors=BODY_ERRORS,
            requestBody={
                "required": True,
                "content": {JSON: {"schema": ref("UpdateDeployment")}},
            },
        ),
        "delete": _deployment_op(
            "delete_deployment",
            "Delete: stop and remove everything, then forget the deployment",
            "202",
            "deletion accepted (status deleting); GET answers 404 once it is done",
            errors={"400": error("BadRequest")},
            parameters=[
                {
                    "name": "confirm",
                    "in": "query",
                    "required": True,
                    "description": "must equal the deployment name",
                    "schema": {"type": "string"},
                }
            ],
        ),
    },
    "/v1/deployments/{name}/start": {
        "parameters": [NAME_PARAM],
        "post": _deployment_op(
            "start_deployment", "Run the deployment (intent run)", "202", "start accepted"
        ),
    },
    "/v1/deployments/{name}/stop": {
        "parameters": [NAME_PARAM],
        "post": _deployment_op(
            "stop_deployment",
            "Stop every instance (intent stop); the spec is kept",
            "202",
            "stop accepted",
        ),
    },
    "/v1/deployments/{name}/instances": {
        "parameters": [NAME_PARAM],
        "get": {
            "operationId": "list_instances",
            "summary": "The instances the controller sees for this deployment",
            "responses": {
                "200": json_body("InstanceList", "the instances"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/volumes": {
        "parameters": [NAME_PARAM],
        "get": {
            "operationId": "list_volumes",
            "summary": "Each instance's volumes: Docker volume, path, size_gb, bytes used",
            "responses": {
                "200": json_body("VolumeList", "the volumes"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/config/{file}": {
        "parameters": [
            NAME_PARAM,
            {
                "name": "file",
                "in": "path",
                "required": True,
                "description": "a file name in /etc/config ([A-Za-z0-9_.()-]+, not . or ..)",
                "schema": {
                    "type": "string",
                    "maxLength": 255,
                    "pattern": f"^(?!\\.{{1,2}}$)(?:{CONFIG_NAME_RE.pattern})$",
                },
            },
        ],
        "get": {
            "operationId": "get_config_file",
            "summary": "The file's content",
            "responses": {
                "200": {
                    "description": "raw bytes",
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
        "put": {
            "operationId": "put_config_file",
            "summary": "Write the file (raw body); running containers see it, no restart",
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            },
            "responses": {
                "200": json_body("Deployment", "the new revision"),
                "404": error("NotFound"),
                "413": error("TooLarge"),
                "422": error("Invalid"),
                **COMMON_ERRORS,
            },
        },
        "delete": {
            "operationId": "delete_config_file",
            "summary": "Remove the file from /etc/config",
            "responses": {
                "200": json_body("Deployment", "the new revision"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/registry/login": {
        "get": {
            "operationId": "registry_login",
            "summary": "The docker login line for the node registry (no password in the answer)",
            "responses": {
                "200": json_body("RegistryLogin", "how to log in"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        }
    },
    "/v1/registry/events": {
        "post": {
            "operationId": "registry_events",
            "summary": "Node registry notifications: a manifest push rolls deployments out",
            "description": (
                "Authorization: Bearer <the registry's shared secret> (not the API token). "
                "Only deployments with this repository, this tag and deploy_on_push roll, "
                "to exactly the pushed digest; duplicates and older pushes roll nothing."
            ),
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/vnd.docker.distribution.events.v1+json": {
                        "schema": {"type": "object", "required": ["events"]}
                    }
                },
            },
            "responses": {
                "202": json_body("PushResult", "what was rolled"),
                "400": error("BadRequest"),
                "401": error("Unauthorized"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/secrets": {
        "get": {
            "operationId": "list_secrets",
            "summary": "Secret names, versions, times and users (never values)",
            "responses": {"200": json_body("SecretList", "the secrets"), **COMMON_ERRORS},
        },
        "post": {
            "operationId": "create_secret",
            "summary": "Store a secret, encrypted at rest; the value is write-only",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("CreateSecret")}},
            },
            "responses": {
                "201": json_body("Secret", "created (no value)"),
                "400": error("BadRequest"),
                "409": error("Conflict"),
                "422": error("Invalid"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/secrets/{name}": {
        "parameters": [NAME_PARAM],
        "get": {
            "operationId": "get_secret",
            "summary": "One secret's metadata (never the value)",
            "responses": {
                "200": json_body("Secret", "the secret"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
        "put": {
            "operationId": "put_secret",
            "summary": "Replace the value; deployments using it roll to the new value",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("SecretValue")}},
            },
            "responses": {
                "200": json_body("Secret", "updated (no value)"),
                "400": error("BadRequest"),
                "404": error("NotFound"),
                "422": error("Invalid"),
                **COMMON_ERRORS,
            },
        },
        "delete": {
            "operationId": "delete_secret",
            "summary": "Delete a secret no deployment uses (409 lists the users)",
            "responses": {
                "200": json_body("Deleted", "gone"),
                "404": error("NotFound"),
                "409": error("Conflict"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/history": {
        "parameters": [NAME_PARAM],
        "get": {
            "operationId": "list_history",
            "summary": "Image history: every rollout's image id, newest first",
            "responses": {
                "200": json_body("History", "the rollouts"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/history/{digest}/revert": {
        "parameters": [
            NAME_PARAM,
            {
                "name": "digest",
                "in": "path",
                "required": True,
                "description": "an image id from the history (full, or a unique prefix)",
                "schema": {"type": "string"},
            },
        ],
        "post": {
            "operationId": "revert_deployment",
            "summary": "Roll back to that exact image (a new revision, zero downtime)",
            "responses": {
                "202": json_body("Deployment", "the new revision"),
                # A {digest} that is no revision number, digest or image id prefix.
                "400": error("BadRequest"),
                "422": error("Invalid"),
                "404": error("NotFound"),
                "409": error("Conflict"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/events": {
        "parameters": [NAME_PARAM],
        "get": {
            "operationId": "list_events",
            "summary": "History, oldest first: the newest `limit` events with id > `after`",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "description": "only events with a larger id (poll with the last id seen)",
                    "schema": {"type": "integer", "minimum": 0, "default": 0},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": EVENTS_MAX_LIMIT,
                        "default": EVENTS_DEFAULT_LIMIT,
                    },
                },
            ],
            "responses": {
                "200": json_body("EventList", "the events"),
                "400": error("BadRequest"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
}
