"""The OpenAPI 3.0 document of the local API, served at ``GET /v1/openapi.json``.

Hand-written on purpose: it is the public contract, reviewed like code. A unit
test checks that its paths and methods are exactly the routes the aiohttp
router serves, in both directions.
"""

from __future__ import annotations

from typing import Any

from patrd import __version__
from patrd.api import openapi_nodes, openapi_notify, openapi_runs
from patrd.api.deployments import EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT
from patrd.api.openapi_access import ACCESS_PATHS, ACCESS_SCHEMAS
from patrd.model import spec
from patrd.model.deployment import Intent, Status

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


_NAME_PARAM = {"$ref": "#/components/parameters/name"}

# Errors any authenticated route may answer.
_COMMON_ERRORS = {
    "401": _error("Unauthorized"),
    "403": _error("Forbidden"),
    "500": _error("Internal"),
    "503": _error("Unavailable"),
}
_BODY_ERRORS = {
    "400": _error("BadRequest"),
    "413": _error("TooLarge"),
    "422": _error("Invalid"),
}

_PORTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        'Container port (a decimal string, "1".."65535") → protocol. '
        "Each HTTP port is served at http://<port>-<name>.<base_domain>."
    ),
    "minProperties": 1,
    "additionalProperties": {"type": "string", "enum": [p.value for p in spec.PortProtocol]},
    "example": {"80": "http"},
}
_ENV_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        f"Environment variables; names match [A-Za-z_][A-Za-z0-9_]*, at most "
        f"{spec.MAX_ENV_VARS}, values at most {spec.MAX_ENV_VALUE_BYTES} bytes. Reserved: "
        + ", ".join(sorted(spec.RESERVED_ENV))
    ),
    "maxProperties": spec.MAX_ENV_VARS,
    "additionalProperties": {"type": "string"},
}
_SCALE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min": {"type": "integer", "minimum": 1, "maximum": spec.MAX_SCALE, "default": 1},
        "max": {
            "type": "integer",
            "minimum": 1,
            "maximum": spec.MAX_SCALE,
            "description": "at least min; defaults to max(current max, min)",
        },
    },
}
_RESOURCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cpu": {
            "type": "number",
            "minimum": spec.MIN_CPU,
            "maximum": spec.MAX_CPU,
            "default": 1.0,
        },
        "memory_mb": {
            "type": "integer",
            "minimum": spec.MIN_MEMORY_MB,
            "maximum": spec.MAX_MEMORY_MB,
            "default": 512,
        },
    },
}
_TIMESTAMP = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}

_PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "description": "HTTP GET from the daemon; 200-399 within timeout_s passes",
    "properties": {
        "port": {"type": "integer", "description": "one of the deployment's http ports"},
        "path": {"type": "string", "default": "/", "maxLength": 255, "pattern": "^/"},
        "period_s": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 10},
        "timeout_s": {"type": "number", "minimum": 0.1, "maximum": 60, "default": 3},
        "failure_threshold": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 15},
    },
}

# Deploy on push, registry auth, config mounts, volumes, security: the same in a
# stored spec, a create and an update.
_SPEC_EXTRAS: dict[str, Any] = {
    "deploy_on_push": {"type": "boolean", "default": True},
    "registry_auth": {
        "type": "object",
        "nullable": True,
        "description": 'pull credentials: {"secret": NAME} holding username:password',
        "properties": {"secret": {"type": "string"}},
    },
    "config_mounts": {
        "type": "object",
        "description": "file name in /etc/config -> content (base64)",
        "additionalProperties": {"type": "string", "format": "byte"},
    },
    "volumes": {
        "type": "object",
        "description": "volume name -> one Docker volume per instance",
        "additionalProperties": {
            "type": "object",
            "required": ["path", "size_gb"],
            "properties": {
                "path": {"type": "string"},
                "size_gb": {"type": "integer", "minimum": 1},
            },
        },
    },
    "jobs": openapi_runs.JOB_SPEC_SCHEMA,
    "security": {
        "type": "object",
        "description": (
            "the explicit override of the hardening defaults, within the operator's "
            "[security] policy (README: Trust boundaries); outside it: 422"
        ),
        "properties": {
            "extra_capabilities": {
                "type": "array",
                "items": {"type": "string"},
                "description": "only from security.allowed_capabilities; never SYS_ADMIN & co.",
            },
            "pids_limit": {
                "type": "integer",
                "nullable": True,
                "minimum": 0,
                "description": (
                    "security.pids_min..pids_max (0 only in specs stored before the policy); "
                    "null: docker.pids_limit"
                ),
            },
        },
    },
    "backup": {
        "type": "object",
        "description": (
            "off-site backups of the volumes ([backup]): hooks run with exec in one running "
            "instance, pre before the volumes are read, post after (always); a string is "
            "run with /bin/sh -c, a list is an argv"
        ),
        "properties": {
            "hooks": {
                "type": "object",
                "properties": {
                    "pre": {"$ref": "#/components/schemas/BackupHook"},
                    "post": {"$ref": "#/components/schemas/BackupHook"},
                },
            }
        },
    },
}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "description": "machine-readable code",
                "enum": [
                    "invalid",
                    "bad_request",
                    "unauthorized",
                    "forbidden",
                    "not_found",
                    "method_not_allowed",
                    "conflict",
                    "too_large",
                    "internal",
                    "store_unavailable",
                    "engine_unavailable",
                    "secrets_unavailable",
                    "backup_unavailable",
                ],
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
            "applied_at": {**_TIMESTAMP, "nullable": True},
            "loads": {"type": "integer", "description": "loads since the daemon started"},
        },
    },
    "DeploymentSpec": {
        "type": "object",
        "description": "A validated spec, as stored (every field present).",
        "required": [
            "name",
            "registry",
            "image",
            "tag",
            "ports",
            "env",
            "scale",
            "resources",
            "deploy_on_create",
            "region",
        ],
        "properties": {
            "name": {"type": "string"},
            "registry": {"type": "string"},
            "image": {"type": "string"},
            "tag": {"type": "string"},
            "ports": _PORTS_SCHEMA,
            "env": _ENV_SCHEMA,
            "scale": _SCALE_SCHEMA,
            "resources": _RESOURCES_SCHEMA,
            "deploy_on_create": {"type": "boolean"},
            "region": {"type": "string"},
            "startup_probe": {**_PROBE_SCHEMA, "nullable": True},
            **_SPEC_EXTRAS,
            "liveness_probe": {**_PROBE_SCHEMA, "nullable": True},
        },
    },
    "CreateDeployment": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "image", "ports"],
        "properties": {
            "name": {
                "type": "string",
                "minLength": 2,
                "maxLength": 64,
                "pattern": spec.NAME_RE.pattern,
            },
            "registry": {"type": "string", "default": spec.DEFAULT_REGISTRY},
            "image": {
                "type": "string",
                "maxLength": 255,
                "description": "repository only (no tag or digest), e.g. library/nginx",
            },
            "tag": {"type": "string", "pattern": spec.TAG_RE.pattern, "default": "latest"},
            "ports": _PORTS_SCHEMA,
            "env": _ENV_SCHEMA,
            "scale": _SCALE_SCHEMA,
            "resources": _RESOURCES_SCHEMA,
            "deploy_on_create": {
                "type": "boolean",
                "default": True,
                "description": "false: create only (status created); start it later",
            },
            "region": {"type": "string", "description": "defaults to this node's region"},
            "startup_probe": _PROBE_SCHEMA,
            **_SPEC_EXTRAS,
            "liveness_probe": _PROBE_SCHEMA,
        },
    },
    "UpdateDeployment": {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "Partial update: given fields replace the current ones (scale and resources "
            "merge per key; env and ports are replaced whole). name, image, tag, registry, "
            "region and deploy_on_create may be repeated unchanged but never changed."
        ),
        "properties": {
            "ports": _PORTS_SCHEMA,
            "env": _ENV_SCHEMA,
            "scale": _SCALE_SCHEMA,
            "resources": _RESOURCES_SCHEMA,
            "startup_probe": {**_PROBE_SCHEMA, "nullable": True, "description": "null removes it"},
            **_SPEC_EXTRAS,
            "liveness_probe": {**_PROBE_SCHEMA, "nullable": True, "description": "null removes it"},
            "name": {"type": "string"},
            "image": {"type": "string"},
            "tag": {"type": "string"},
            "registry": {"type": "string"},
            "region": {"type": "string"},
            "deploy_on_create": {"type": "boolean"},
        },
    },
    "Instance": {
        "type": "object",
        "required": [
            "name",
            "container_id",
            "revision",
            "slot",
            "state",
            "ready",
            "address",
            "restarts",
        ],
        "properties": {
            "name": {"type": "string", "example": "web-0"},
            "container_id": {"type": "string"},
            "revision": {"type": "integer"},
            "slot": {"type": "integer"},
            "state": {"type": "string", "description": "Docker container state"},
            "ready": {"type": "boolean", "description": "in the proxy pool"},
            "address": {"type": "string", "nullable": True},
            "restarts": {"type": "integer"},
            "current": {
                "type": "boolean",
                "description": "built from the target revision (false: being replaced)",
            },
            "probe": {
                "type": "object",
                "required": ["phase", "last", "liveness_failures"],
                "properties": {
                    "phase": {
                        "type": "string",
                        "enum": ["", "starting", "ready", "failed", "unhealthy"],
                    },
                    "last": {"type": "string", "description": "last result, e.g. 200"},
                    "liveness_failures": {"type": "integer", "minimum": 0},
                },
            },
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
    "Secret": {
        "type": "object",
        "required": ["name", "version", "created_at", "updated_at", "used_by"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer", "description": "grows on every PUT"},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "used_by": {"type": "array", "items": {"type": "string"}},
        },
    },
    "SecretList": {
        "type": "object",
        "required": ["secrets"],
        "properties": {"secrets": {"type": "array", "items": _ref("Secret")}},
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
    "HistoryEntry": {
        "type": "object",
        "required": ["revision", "digest", "image", "tag", "state", "reason", "created_at"],
        "properties": {
            "revision": {"type": "integer"},
            "digest": {"type": "string", "nullable": True, "description": "image id (sha256)"},
            "image": {"type": "string"},
            "tag": {"type": "string"},
            "state": {"type": "string", "enum": ["deployed", "superseded", "failed"]},
            "reason": {"type": "string"},
            "created_at": _TIMESTAMP,
            "deployed_at": {**_TIMESTAMP, "nullable": True},
        },
    },
    "History": {
        "type": "object",
        "required": ["history"],
        "properties": {"history": {"type": "array", "items": _ref("HistoryEntry")}},
    },
    "Deployment": {
        "type": "object",
        "required": [
            "id",
            "name",
            "revision",
            "status",
            "status_reason",
            "intent",
            "created_at",
            "updated_at",
            "spec",
            "urls",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "revision": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "status_reason": {
                "type": "string",
                "description": (
                    "why: e.g. 'crash loop: instance 0 failed to start 3 times (…)' or the "
                    "engine's refusal to start an instance, with status errored"
                ),
            },
            "intent": {"type": "string", "enum": [i.value for i in Intent]},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "spec": _ref("DeploymentSpec"),
            "stable_revision": {
                "type": "integer",
                "nullable": True,
                "description": "the last revision that finished rolling out",
            },
            "urls": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "instances": {
                "type": "array",
                "items": _ref("Instance"),
                "description": "present on GET (list and single)",
            },
        },
    },
    "DeploymentList": {
        "type": "object",
        "required": ["deployments"],
        "properties": {
            "deployments": {"type": "array", "items": _ref("Deployment")},
            "next": {
                "type": "string",
                "nullable": True,
                "description": "paged requests only: the after of the next page, null at the end",
            },
        },
    },
    "InstanceList": {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "items": _ref("Instance")}},
    },
    "Event": {
        "type": "object",
        "required": ["id", "at", "kind", "message", "revision"],
        "properties": {
            "id": {"type": "integer", "description": "increasing; use as ?after="},
            "at": _TIMESTAMP,
            "kind": {"type": "string", "example": "status"},
            "message": {"type": "string"},
            "revision": {"type": "integer", "nullable": True},
        },
    },
    "EventList": {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": _ref("Event")}},
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


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


def _deployment_op(
    op_id: str,
    summary: str,
    status: str,
    description: str,
    errors: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    responses: dict[str, Any] = {status: _json_body("Deployment", description)}
    responses.update(errors or {})
    responses.update({"404": _error("NotFound"), "409": _error("Conflict"), **_COMMON_ERRORS})
    return {"operationId": op_id, "summary": summary, "responses": responses, **extra}


PATHS: dict[str, Any] = {
    "/v1/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness of the API (no authentication)",
            "security": [],
            "responses": {"200": _json_body("Health", "the daemon answers")},
        }
    },
    "/v1/firewall": {
        "get": {
            "operationId": "firewall",
            "summary": "The nftables ruleset patrd loads (dry run when disabled) and its counters",
            "responses": {"200": _json_body("Firewall", "the firewall"), **_COMMON_ERRORS},
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
                **_COMMON_ERRORS,
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
                "403": _error("Forbidden"),
                **_COMMON_ERRORS,
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
                "200": _json_body("DeploymentList", "the deployments"),
                **_COMMON_ERRORS,
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
                "content": {JSON: {"schema": _ref("CreateDeployment")}},
            },
            "responses": {
                "200": {
                    "description": "dry run: the body is valid",
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "dry_run": {"type": "boolean"},
                                    "name": {"type": "string"},
                                    "spec": {"type": "object"},
                                    "urls": {"type": "array", "items": {"type": "string"}},
                                    "estimated_cost": {"type": "object"},
                                    "capacity": {"type": "object"},
                                },
                            }
                        }
                    },
                },
                "201": {
                    **_json_body("Deployment", "created"),
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                **_BODY_ERRORS,
                "409": _error("Conflict"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}": {
        "parameters": [_NAME_PARAM],
        "get": _deployment_op(
            "get_deployment", "One deployment with its instances", "200", "the deployment"
        ),
        "patch": _deployment_op(
            "update_deployment",
            "Change ports, env, scale or resources (a new revision when anything changed)",
            "200",
            "the deployment after the change",
            errors=_BODY_ERRORS,
            requestBody={
                "required": True,
                "content": {JSON: {"schema": _ref("UpdateDeployment")}},
            },
        ),
        "delete": _deployment_op(
            "delete_deployment",
            "Delete: stop and remove everything, then forget the deployment",
            "202",
            "deletion accepted (status deleting); GET answers 404 once it is done",
            errors={"400": _error("BadRequest")},
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
        "parameters": [_NAME_PARAM],
        "post": _deployment_op(
            "start_deployment", "Run the deployment (intent run)", "202", "start accepted"
        ),
    },
    "/v1/deployments/{name}/stop": {
        "parameters": [_NAME_PARAM],
        "post": _deployment_op(
            "stop_deployment",
            "Stop every instance (intent stop); the spec is kept",
            "202",
            "stop accepted",
        ),
    },
    "/v1/deployments/{name}/instances": {
        "parameters": [_NAME_PARAM],
        "get": {
            "operationId": "list_instances",
            "summary": "The instances the controller sees for this deployment",
            "responses": {
                "200": _json_body("InstanceList", "the instances"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/volumes": {
        "parameters": [_NAME_PARAM],
        "get": {
            "operationId": "list_volumes",
            "summary": "Each instance's volumes: Docker volume, path, size_gb, bytes used",
            "responses": {
                "200": _json_body("VolumeList", "the volumes"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/config/{file}": {
        "parameters": [
            _NAME_PARAM,
            {
                "name": "file",
                "in": "path",
                "required": True,
                "description": "a file name in /etc/config ([A-Za-z0-9_.()-]+)",
                "schema": {"type": "string"},
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
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
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
                "200": _json_body("Deployment", "the new revision"),
                "404": _error("NotFound"),
                "413": _error("TooLarge"),
                "422": _error("Invalid"),
                **_COMMON_ERRORS,
            },
        },
        "delete": {
            "operationId": "delete_config_file",
            "summary": "Remove the file from /etc/config",
            "responses": {
                "200": _json_body("Deployment", "the new revision"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/registry/login": {
        "get": {
            "operationId": "registry_login",
            "summary": "The docker login line for the node registry (no password in the answer)",
            "responses": {
                "200": _json_body("RegistryLogin", "how to log in"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
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
                "202": _json_body("PushResult", "what was rolled"),
                "400": _error("BadRequest"),
                "401": _error("Unauthorized"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/secrets": {
        "get": {
            "operationId": "list_secrets",
            "summary": "Secret names, versions, times and users (never values)",
            "responses": {"200": _json_body("SecretList", "the secrets"), **_COMMON_ERRORS},
        },
        "post": {
            "operationId": "create_secret",
            "summary": "Store a secret, encrypted at rest; the value is write-only",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("CreateSecret")}},
            },
            "responses": {
                "201": _json_body("Secret", "created (no value)"),
                "400": _error("BadRequest"),
                "409": _error("Conflict"),
                "422": _error("Invalid"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/secrets/{name}": {
        "parameters": [_NAME_PARAM],
        "get": {
            "operationId": "get_secret",
            "summary": "One secret's metadata (never the value)",
            "responses": {
                "200": _json_body("Secret", "the secret"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
        "put": {
            "operationId": "put_secret",
            "summary": "Replace the value; deployments using it roll to the new value",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SecretValue")}},
            },
            "responses": {
                "200": _json_body("Secret", "updated (no value)"),
                "400": _error("BadRequest"),
                "404": _error("NotFound"),
                "422": _error("Invalid"),
                **_COMMON_ERRORS,
            },
        },
        "delete": {
            "operationId": "delete_secret",
            "summary": "Delete a secret no deployment uses (409 lists the users)",
            "responses": {
                "200": _json_body("Deleted", "gone"),
                "404": _error("NotFound"),
                "409": _error("Conflict"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/history": {
        "parameters": [_NAME_PARAM],
        "get": {
            "operationId": "list_history",
            "summary": "Image history: every rollout's image id, newest first",
            "responses": {
                "200": _json_body("History", "the rollouts"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/history/{digest}/revert": {
        "parameters": [
            _NAME_PARAM,
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
                "202": _json_body("Deployment", "the new revision"),
                "404": _error("NotFound"),
                "409": _error("Conflict"),
                **_COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/events": {
        "parameters": [_NAME_PARAM],
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
                "200": _json_body("EventList", "the events"),
                "400": _error("BadRequest"),
                "404": _error("NotFound"),
                **_COMMON_ERRORS,
            },
        },
    },
}

# --- managed URLs and certificates (issue 4; patrd/api/urls.py) ----------------

_URL_TARGET_SCHEMA: dict[str, Any] = {
    "description": "exactly one of the three kinds",
    "oneOf": [
        {
            "type": "object",
            "title": "deployment",
            "additionalProperties": False,
            "required": ["deployment", "port"],
            "properties": {
                "deployment": {"type": "string", "pattern": spec.NAME_RE.pattern},
                "port": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 65535,
                    "description": "one of the deployment's HTTP ports",
                },
            },
        },
        {
            "type": "object",
            "title": "redirect",
            "additionalProperties": False,
            "required": ["redirect"],
            "properties": {
                "redirect": {
                    "type": "string",
                    "format": "uri",
                    "description": "base URL; the rest of the path and the query are kept",
                },
                "permanent": {
                    "type": "boolean",
                    "default": True,
                    "description": "true: 308, false: 307",
                },
            },
        },
        {
            "type": "object",
            "title": "proxy",
            "additionalProperties": False,
            "required": ["proxy"],
            "properties": {
                "proxy": {
                    "type": "string",
                    "format": "uri",
                    "description": "http(s)://host[:port][/base]; Host is set to host",
                }
            },
        },
    ],
}
_URL_FIELDS: dict[str, Any] = {
    "domain": {
        "type": "string",
        "maxLength": 253,
        "description": "a fully qualified DNS name (no wildcard), lowercase",
        "example": "app.example.com",
    },
    "path": {
        "type": "string",
        "default": "/",
        "description": "path prefix on a segment boundary; the longest prefix wins",
    },
    "target": _URL_TARGET_SCHEMA,
    "http_redirect": {
        "type": "boolean",
        "description": "plain-HTTP requests get a 308 to https (default: tls.redirect_http)",
    },
    "max_body_bytes": {
        "type": "integer",
        "nullable": True,
        "minimum": 1024,
        "description": "request body limit for this URL (null: proxy.max_body_bytes) → 413",
    },
    "timeouts": {
        "type": "object",
        "nullable": True,
        "additionalProperties": False,
        "description": "this URL's own proxy timeouts in seconds (absent or null: the "
        "proxy.* key of the same name); e.g. a long-poll endpoint's upstream_header_timeout_s",
        "properties": {
            name: {"type": "number", "nullable": True, "minimum": 0, "exclusiveMinimum": True}
            for name in (
                "body_timeout_s",
                "upstream_header_timeout_s",
                "upstream_idle_timeout_s",
                "send_timeout_s",
            )
        },
    },
}
_NULLABLE_TIME = {**_TIMESTAMP, "nullable": True}
SCHEMAS.update(
    {
        "CreateUrl": {
            "type": "object",
            "additionalProperties": False,
            "required": ["domain", "target"],
            "properties": _URL_FIELDS,
        },
        "UpdateUrl": {
            "type": "object",
            "additionalProperties": False,
            "description": "Partial update: given fields replace the current ones.",
            "properties": _URL_FIELDS,
        },
        "UrlTls": {
            "type": "object",
            "required": ["status", "error", "expires_at", "issuer"],
            "properties": {
                "status": {"type": "string", "enum": ["pending", "issued", "failed"]},
                "error": {"type": "string", "description": "the last failure, if any"},
                "expires_at": _NULLABLE_TIME,
                "issuer": {"type": "string", "enum": ["acme", "local", ""]},
            },
        },
        "Url": {
            "type": "object",
            "required": [
                "id",
                "domain",
                "path",
                "target",
                "http_redirect",
                "url",
                "created_at",
                "updated_at",
                "tls",
            ],
            "properties": {
                "id": {"type": "string"},
                **_URL_FIELDS,
                "url": {"type": "string", "format": "uri"},
                "created_at": _TIMESTAMP,
                "updated_at": _TIMESTAMP,
                "tls": _ref("UrlTls"),
            },
        },
        "UrlList": {
            "type": "object",
            "required": ["urls"],
            "properties": {"urls": {"type": "array", "items": _ref("Url")}},
        },
        "Certificate": {
            "type": "object",
            "description": "One hostname's certificate and its issuing bookkeeping (no keys).",
            "required": [
                "domain",
                "status",
                "issuer",
                "serial",
                "not_before",
                "not_after",
                "renew_at",
                "error",
                "failures",
                "next_attempt_at",
                "attempts",
                "orders_last_hour",
                "orders_total",
                "renewals",
                "alert",
            ],
            "properties": {
                "domain": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "issued", "failed"]},
                "issuer": {"type": "string", "enum": ["acme", "local", ""]},
                "serial": {"type": "string", "description": "hex"},
                "not_before": _NULLABLE_TIME,
                "not_after": _NULLABLE_TIME,
                "renew_at": _NULLABLE_TIME,
                "error": {"type": "string"},
                "failures": {"type": "integer", "description": "failed attempts in a row"},
                "next_attempt_at": _NULLABLE_TIME,
                "attempts": {"type": "integer"},
                "orders_last_hour": {"type": "integer"},
                "orders_total": {"type": "integer"},
                "renewals": {"type": "integer"},
                "alert": {
                    "type": "boolean",
                    "description": "within 7 days of expiry and renewal keeps failing",
                },
            },
        },
        "CertificateList": {
            "type": "object",
            "required": ["certificates"],
            "properties": {"certificates": {"type": "array", "items": _ref("Certificate")}},
        },
    }
)
PARAMETERS["url_id"] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "managed URL id",
    "schema": {"type": "string"},
}
_URL_ID_PARAM = {"$ref": "#/components/parameters/url_id"}
PATHS.update(
    {
        "/v1/urls": {
            "get": {
                "operationId": "list_urls",
                "summary": "Managed URLs, by domain and path, with their certificate status",
                "responses": {"200": _json_body("UrlList", "the URLs"), **_COMMON_ERRORS},
            },
            "post": {
                "operationId": "create_url",
                "summary": "Add a managed URL; its certificate is issued in the background",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("CreateUrl")}}},
                "responses": {
                    "201": {
                        **_json_body("Url", "created"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_BODY_ERRORS,
                    "409": _error("Conflict"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/urls/{id}": {
            "parameters": [_URL_ID_PARAM],
            "get": {
                "operationId": "get_url",
                "summary": "One managed URL",
                "responses": {
                    "200": _json_body("Url", "the URL"),
                    "404": _error("NotFound"),
                    **_COMMON_ERRORS,
                },
            },
            "patch": {
                "operationId": "update_url",
                "summary": "Change a managed URL's domain, path, target or http_redirect",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("UpdateUrl")}}},
                "responses": {
                    "200": _json_body("Url", "the URL after the change"),
                    **_BODY_ERRORS,
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                    **_COMMON_ERRORS,
                },
            },
            "delete": {
                "operationId": "delete_url",
                "summary": "Remove a managed URL (its certificate file is kept)",
                "responses": {
                    "200": _json_body("Url", "the URL removed"),
                    "404": _error("NotFound"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/certificates": {
            "get": {
                "operationId": "list_certificates",
                "summary": "Every certificate patrd serves or wants, with renewal bookkeeping",
                "responses": {
                    "200": _json_body("CertificateList", "the certificates"),
                    **_COMMON_ERRORS,
                },
            }
        },
    }
)


# --- logs, metrics, Prometheus, cost (issue 7; patrd/api/observe.py) -------------------

_SCALE_SCHEMA["properties"]["target_cpu"] = {
    "type": "integer",
    "minimum": spec.MIN_TARGET_CPU,
    "maximum": spec.MAX_TARGET_CPU,
    "default": spec.DEFAULT_TARGET_CPU,
    "description": (
        "autoscaler target: percent of the instances' CPU allocation (used when max > min "
        "and the deployment has no volumes)"
    ),
}
_COST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["min", "max", "currency", "period"],
    "description": "estimated cost per month at scale.min and scale.max (config [cost])",
    "properties": {
        "min": {"type": "number"},
        "max": {"type": "number"},
        "currency": {"type": "string"},
        "period": {"type": "string", "enum": ["month"]},
    },
}
_RESOURCE_PAIR = {
    "type": "object",
    "properties": {"cpu": {"type": "number"}, "memory_mb": {"type": "integer"}},
}
_CAPACITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["fits", "node", "required", "committed", "warning"],
    "description": (
        "whether this node has CPUs and memory for this deployment's instances next to the "
        "running instances of the others (a warning, never a refusal; one instance larger "
        "than the node is refused with 422 on resources.cpu / resources.memory_mb). "
        "warning is set only on the create or update that over-commits the node"
    ),
    "properties": {
        "fits": {"type": "boolean"},
        "node": _RESOURCE_PAIR,
        "required": _RESOURCE_PAIR,
        "committed": _RESOURCE_PAIR,
        "warning": {"type": "string", "nullable": True},
    },
}
SCHEMAS["Deployment"]["properties"].update(
    {
        "replicas": {
            "type": "integer",
            "description": "instances it runs: the autoscaler's count within [min, max], else min",
        },
        "estimated_cost": _COST_SCHEMA,
        "capacity": {**_CAPACITY_SCHEMA, "description": "on create, update and GET of one"},
    }
)
SCHEMAS["Deployment"]["required"] = [*SCHEMAS["Deployment"]["required"], "estimated_cost"]
_METRICS_NUMBERS = {
    "cpu_cores": {"type": "number", "description": "cores used (sum over instances)"},
    "cpu_allocation_cores": {"type": "number", "description": "cores allowed (sum)"},
    "cpu_usage": {"type": "number", "description": "cpu_cores / cpu_allocation_cores"},
    "memory_bytes": {"type": "integer", "description": "working set (usage - inactive file)"},
    "memory_limit_bytes": {"type": "integer", "nullable": True},
    "rx_bytes_per_s": {"type": "number", "nullable": True},
    "tx_bytes_per_s": {"type": "number", "nullable": True},
    "read_bytes_per_s": {"type": "number", "nullable": True},
    "write_bytes_per_s": {"type": "number", "nullable": True},
}
SCHEMAS.update(
    {
        "LogLine": {
            "type": "object",
            "description": "one line of application/x-ndjson (format=json)",
            "required": ["t", "instance", "container", "revision", "stream", "line"],
            "properties": {
                "t": {"type": "string", "description": "RFC 3339 UTC with nanoseconds"},
                "instance": {"type": "string", "example": "web-0"},
                "container": {"type": "string", "description": "short container id"},
                "revision": {"type": "integer"},
                "stream": {"type": "string", "enum": ["stdout", "stderr"]},
                "line": {"type": "string"},
                "removed": {
                    "type": "boolean",
                    "description": "true: kept by patrd from an instance removed since",
                },
            },
        },
        "MetricsPoint": {
            "type": "object",
            "properties": {
                "t": _TIMESTAMP,
                "instances": {"type": "integer"},
                "cpu_peak_cores": {"type": "number"},
                "memory_peak_bytes": {"type": "integer"},
                **_METRICS_NUMBERS,
            },
        },
        "InstanceMetrics": {
            "type": "object",
            "properties": {
                "instance": {"type": "string"},
                "container": {"type": "string"},
                "at": _TIMESTAMP,
                "source": {"type": "string", "enum": ["cgroup v1", "cgroup v2", "docker"]},
                **_METRICS_NUMBERS,
            },
        },
        "Metrics": {
            "type": "object",
            "required": ["deployment", "range", "step_s", "current", "points"],
            "properties": {
                "deployment": {"type": "string"},
                "range": {"type": "string", "enum": ["hour", "day", "week", "month"]},
                "step_s": {"type": "number", "description": "bucket width of the points"},
                "instance": {"type": "string", "nullable": True},
                "current": {"type": "array", "items": _ref("InstanceMetrics")},
                "points": {"type": "array", "items": _ref("MetricsPoint")},
            },
        },
    }
)


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


PATHS.update(
    {
        "/v1/deployments/{name}/logs": {
            "parameters": [_NAME_PARAM],
            "get": {
                "operationId": "logs",
                "summary": "stdout and stderr of every instance, merged by timestamp",
                "description": (
                    "Oldest first; each line tagged with instance, container, revision and "
                    "stream; logs of removed instances kept by patrd are included (removed: "
                    "true). follow=true keeps the chunked response open and streams new lines, "
                    "new instances (rollouts, autoscaling) included."
                ),
                "parameters": [
                    _query(
                        "tail",
                        "at most this many newest lines (default 1000, or all since `since`; "
                        "max 100000)",
                        {"type": "string", "example": "100"},
                    ),
                    _query("since", "RFC 3339 or unix seconds", {"type": "string"}),
                    _query("until", "RFC 3339 or unix seconds", {"type": "string"}),
                    _query(
                        "instance",
                        "instance name (web-0) or container id prefix; 400 when it names no "
                        "instance and no kept logs",
                        {"type": "string"},
                    ),
                    _query("follow", "stream new lines", {"type": "boolean", "default": False}),
                    _query(
                        "format",
                        "json: one LogLine per line; text: '<t> <instance> <stream>: <line>'",
                        {"type": "string", "enum": ["json", "text"], "default": "json"},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "the lines (chunked)",
                        "content": {
                            "application/x-ndjson": {"schema": _ref("LogLine")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/deployments/{name}/metrics": {
            "parameters": [_NAME_PARAM],
            "get": {
                "operationId": "metrics",
                "summary": "CPU, memory, network and block I/O history, summed over instances",
                "parameters": [
                    _query(
                        "range",
                        "hour: raw samples; day: 1-minute, week: 15-minute, month: 1-hour buckets",
                        {
                            "type": "string",
                            "enum": ["hour", "day", "week", "month"],
                            "default": "hour",
                        },
                    ),
                    _query(
                        "instance", "one instance (web-0) instead of the sum", {"type": "string"}
                    ),
                ],
                "responses": {
                    "200": _json_body("Metrics", "the history and the latest sample per instance"),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/metrics": {
            "get": {
                "operationId": "prometheus",
                "summary": "Prometheus text exposition (patrd_* families; README: Metrics)",
                "responses": {
                    "200": {
                        "description": "text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _error("NotFound"),
                    **_COMMON_ERRORS,
                },
            }
        },
    }
)

# Scoped tokens and the audit log (patrd/api/openapi_access.py).
PATHS.update(ACCESS_PATHS)
SCHEMAS.update(ACCESS_SCHEMAS)
# Off-site backups (patrd/state/offsite.py, patrd/api/backups.py).
_UNIX_TIME = {"type": "number", "description": "unix time, seconds"}
_JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_RUN_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "a run id, latest, or the id (or a unique prefix) of any snapshot of the run",
    "schema": {"type": "string"},
}
SCHEMAS.update(
    {
        "BackupHook": {
            "oneOf": [
                {"type": "string", "description": "run with /bin/sh -c"},
                {"type": "array", "items": {"type": "string"}, "description": "an argv"},
            ]
        },
        "BackupJob": {
            "type": "object",
            "required": ["id", "kind", "state", "started_at", "message", "details", "snapshots"],
            "properties": {
                "id": {"type": "string", "description": "also the run tag of a backup's snapshots"},
                "kind": {"type": "string", "enum": ["backup", "restore"]},
                "state": {"type": "string", "enum": ["running", "ok", "failed"]},
                "started_at": _UNIX_TIME,
                "finished_at": {**_UNIX_TIME, "nullable": True},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "string"}},
                "snapshots": {"type": "array", "items": {"type": "string"}},
            },
        },
        "BackupSnapshot": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "short_id": {"type": "string"},
                "time": _UNIX_TIME,
                "kind": {"type": "string", "enum": ["state", "volume"]},
                "run": {"type": "string"},
                "deployment": {"type": "string", "nullable": True},
                "volume": {"type": "string", "nullable": True},
                "instance": {"type": "integer", "nullable": True},
                "hostname": {"type": "string"},
            },
        },
        "BackupList": {
            "type": "object",
            "required": ["configured", "runs", "jobs"],
            "properties": {
                "configured": {"type": "boolean", "description": "[backup] repository is set"},
                "repository": {"type": "string", "description": "credentials masked"},
                "schedule": {"type": "string", "nullable": True},
                "next_run_at": {**_UNIX_TIME, "nullable": True},
                "last_run_at": {**_UNIX_TIME, "nullable": True},
                "last_success_at": {**_UNIX_TIME, "nullable": True},
                "busy": {"type": "boolean"},
                "error": {"type": "string", "nullable": True},
                "jobs": {"type": "array", "items": _ref("BackupJob")},
                "runs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "time": _UNIX_TIME,
                            "state": {"type": "boolean", "description": "holds patrd's state"},
                            "deployments": {"type": "array", "items": {"type": "string"}},
                            "snapshots": {"type": "array", "items": _ref("BackupSnapshot")},
                        },
                    },
                },
            },
        },
        "BackupRestore": {
            "type": "object",
            "additionalProperties": False,
            "required": ["deployment"],
            "properties": {
                "deployment": {"type": "string"},
                "volume": {"type": "string", "description": "only this volume"},
                "target": {
                    "type": "string",
                    "description": (
                        "an empty host directory to restore into (unix socket only); without "
                        "it the deployment's own volumes are replaced while its instances are "
                        "stopped (that deployment only; started again afterwards)"
                    ),
                },
            },
        },
    }
)
_BACKUP_ERRORS = {"409": _error("Conflict"), "503": _error("Unavailable"), **_COMMON_ERRORS}
PATHS.update(
    {
        "/v1/backups": {
            "get": {
                "operationId": "list_backups",
                "summary": "Off-site backups: configuration, schedule, jobs and runs",
                "responses": {"200": _json_body("BackupList", "the backups"), **_COMMON_ERRORS},
            },
            "post": {
                "operationId": "run_backup",
                "summary": "Start a backup run now (state and every deployment's volumes)",
                "responses": {"202": _json_body("BackupJob", "the job"), **_BACKUP_ERRORS},
            },
        },
        "/v1/backups/jobs/{id}": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "get_backup_job",
                "summary": "A backup or restore job (kept in memory, newest 20)",
                "responses": {
                    "200": _json_body("BackupJob", "the job"),
                    "404": _error("NotFound"),
                    **_BACKUP_ERRORS,
                },
            },
        },
        "/v1/backups/{id}/restore": {
            "parameters": [_RUN_ID],
            "post": {
                "operationId": "restore_backup",
                "summary": "Restore one deployment's volumes from a backup run",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("BackupRestore")}},
                },
                "responses": {
                    "202": _json_body("BackupJob", "the job"),
                    "403": _error("Forbidden"),
                    "404": _error("NotFound"),
                    **_BODY_ERRORS,
                    **_BACKUP_ERRORS,
                },
            },
        },
        "/v1/backups/{id}/state": {
            "parameters": [_RUN_ID],
            "get": {
                "operationId": "backup_state",
                "summary": "The state archive of a run, for patrd restore FILE (unix socket only)",
                "responses": {
                    "200": {
                        "description": "the tar (holds secrets)",
                        "content": {"application/x-tar": {"schema": {"type": "string"}}},
                    },
                    "403": _error("Forbidden"),
                    "404": _error("NotFound"),
                    **_BACKUP_ERRORS,
                },
            },
        },
    }
)
# Notifications and the node's health (patrd/api/notify.py).
PATHS.update(openapi_notify.PATHS)
SCHEMAS.update(openapi_notify.SCHEMAS)
PATHS.update(openapi_nodes.PATHS)  # the swarm's nodes (patrd/api/nodes.py)
SCHEMAS.update(openapi_nodes.SCHEMAS)


# --- pinned releases: redeploy, revert by REF, history of releases -------------------

SCHEMAS["HistoryEntry"] = {
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
        "created_at": _TIMESTAMP,
        "deployed_at": {**_TIMESTAMP, "nullable": True},
    },
}
SCHEMAS["RevertRequest"] = {
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
SCHEMAS["Redeployed"] = {
    "allOf": [
        _ref("Deployment"),
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
PATHS.update(
    {
        "/v1/deployments/{name}/redeploy": {
            "parameters": [_NAME_PARAM],
            "post": {
                "operationId": "redeploy_deployment",
                "summary": "Pull the tag; a new digest rolls out as a new pinned revision",
                "responses": {
                    "200": _json_body("Redeployed", "already at that digest: nothing changed"),
                    "202": _json_body("Redeployed", "a new revision pins the new image"),
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/deployments/{name}/revert": {
            "parameters": [_NAME_PARAM],
            "post": {
                "operationId": "revert_by_ref",
                "summary": "Go back to an image of the history (pulled by digest if gone)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RevertRequest")}},
                },
                "responses": {
                    "202": _json_body("Deployment", "the new revision"),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                    "422": _error("Invalid"),
                    **_COMMON_ERRORS,
                },
            },
        },
    }
)

# exec, one-off run, scheduled jobs (patrd/api/openapi_runs.py).
PATHS.update(openapi_runs.PATHS)
SCHEMAS.update(openapi_runs.SCHEMAS)

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "patrd local API",
        "version": __version__,
        "description": (
            "Served on the daemon's unix socket (file mode is the authentication) and, "
            "optionally, on TCP with a bearer token: the api.token_file token (admin) or "
            "a scoped token (read, deploy, write, admin; README: API tokens, scopes and "
            "the audit log). "
            "Every error body is an Error object."
        ),
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "parameters": PARAMETERS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
