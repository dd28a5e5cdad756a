"""Off-site backups (patrd/state/offsite.py, patrd/api/backups.py)."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import BODY_ERRORS, COMMON_ERRORS, JSON, error, json_body, ref

_UNIX_TIME = {"type": "number", "description": "unix time, seconds"}
_JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_RUN_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "a run id, latest, or the id (or a unique prefix) of any snapshot of the run",
    "schema": {"type": "string"},
}
BACKUP_SCHEMAS: dict[str, Any] = {
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
            "jobs": {"type": "array", "items": ref("BackupJob")},
            "runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "time": _UNIX_TIME,
                        "state": {"type": "boolean", "description": "holds patrd's state"},
                        "deployments": {"type": "array", "items": {"type": "string"}},
                        "snapshots": {"type": "array", "items": ref("BackupSnapshot")},
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
_BACKUP_ERRORS = {"409": error("Conflict"), "503": error("Unavailable"), **COMMON_ERRORS}
BACKUP_PATHS: dict[str, Any] = {
    "/v1/backups": {
        "get": {
            "operationId": "list_backups",
            "summary": "Off-site backups: configuration, schedule, jobs and runs",
            "responses": {"200": json_body("BackupList", "the backups"), **COMMON_ERRORS},
        },
        "post": {
            "operationId": "run_backup",
            "summary": "Start a backup run now (state and every deployment's volumes)",
            "responses": {"202": json_body("BackupJob", "the job"), **_BACKUP_ERRORS},
        },
    },
    "/v1/backups/jobs/{id}": {
        "parameters": [_JOB_ID],
        "get": {
            "operationId": "get_backup_job",
            "summary": "A backup or restore job (kept in memory, newest 20)",
            "responses": {
                "200": json_body("BackupJob", "the job"),
                "404": error("NotFound"),
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
                "content": {JSON: {"schema": ref("BackupRestore")}},
            },
            "responses": {
                "202": json_body("BackupJob", "the job"),
                "403": error("Forbidden"),
                "404": error("NotFound"),
                **BODY_ERRORS,
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
                "403": error("Forbidden"),
                "404": error("NotFound"),
                **_BACKUP_ERRORS,
            },
        },
    },
}
