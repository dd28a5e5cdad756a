"""The OpenAPI fragment of exec, one-off run and scheduled jobs (merged by patrd/api/openapi.py)."""

from __future__ import annotations

from typing import Any

from patrd.model.records import JOB_RUNS_KEPT

JSON = "application/json"
NDJSON = "application/x-ndjson"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


_NAME = {"$ref": "#/components/parameters/name"}
_JOB = {
    "name": "job",
    "in": "path",
    "required": True,
    "description": "job name",
    "schema": {"type": "string"},
}
_ERRORS = {
    "401": _error("Unauthorized"),
    "404": _error("NotFound"),
    "500": _error("Internal"),
    "503": _error("Unavailable"),
}
_BODY_ERRORS = {"400": _error("BadRequest"), "413": _error("TooLarge"), "422": _error("Invalid")}
_COMMAND = {
    "type": "array",
    "minItems": 1,
    "maxItems": 256,
    "items": {"type": "string"},
    "description": 'argv, no shell (use ["sh", "-c", "..."] for one)',
}


_TIME = {"type": "string", "format": "date-time", "nullable": True}

SCHEMAS: dict[str, Any] = {
    "ExecRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["command"],
        "properties": {
            "command": _COMMAND,
            "instance": {"type": "string", "description": "web-1 (default: the first running)"},
            "tty": {"type": "boolean", "default": False},
            "stdin": {"type": "boolean", "default": False},
        },
    },
    "ExecCreated": {
        "type": "object",
        "required": ["id", "instance", "container", "tty", "stdin", "attach"],
        "properties": {
            "id": {"type": "string", "description": "attach once, within 60 s"},
            "instance": {"type": "string"},
            "container": {"type": "string"},
            "tty": {"type": "boolean"},
            "stdin": {"type": "boolean"},
            "attach": {"type": "string", "description": "the WebSocket path"},
        },
    },
    "RunRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["command"],
        "properties": {
            "command": _COMMAND,
            "volumes": {
                "type": "boolean",
                "default": False,
                "description": "mount the deployment's volumes (only when it runs one instance)",
            },
            "timeout_s": {"type": "number", "minimum": 1, "maximum": 86400, "nullable": True},
        },
    },
    "RunOutput": {
        "type": "object",
        "description": (
            'one JSON line: first {"run"}, then {"t", "stream", "line"} per output line, '
            'last {"exit_code", "timed_out"} (or {"error"} if it could not run)'
        ),
        "properties": {
            "run": {"type": "string"},
            "t": {"type": "string"},
            "stream": {"type": "string", "enum": ["stdout", "stderr"]},
            "line": {"type": "string"},
            "exit_code": {"type": "integer"},
            "timed_out": {"type": "boolean"},
            "error": {"type": "string"},
        },
    },
    "JobRun": {
        "type": "object",
        "required": ["id", "job", "trigger", "started_at", "outcome", "message"],
        "properties": {
            "id": {"type": "integer"},
            "job": {"type": "string"},
            "trigger": {"type": "string", "enum": ["schedule", "manual"]},
            "started_at": _TIME,
            "ended_at": _TIME,
            "duration_s": {"type": "number", "nullable": True},
            "exit_code": {"type": "integer", "nullable": True},
            "outcome": {
                "type": "string",
                "enum": ["running", "ok", "failed", "timeout", "interrupted", "error"],
            },
            "message": {"type": "string"},
            "log": {
                "type": "array",
                "description": "only on GET of one run: the newest 64 KiB of output",
                "items": {
                    "type": "object",
                    "properties": {
                        "t": {"type": "string"},
                        "stream": {"type": "string"},
                        "line": {"type": "string"},
                    },
                },
            },
        },
    },
    "Job": {
        "type": "object",
        "required": ["name", "schedule", "command", "timeout_s", "next_run", "running"],
        "properties": {
            "name": {"type": "string"},
            "schedule": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}},
            "timeout_s": {"type": "integer"},
            "next_run": {**_TIME, "description": "null while the deployment is not running"},
            "running": {"type": "boolean"},
            "last_run": {**_ref("JobRun"), "nullable": True},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["time_zone", "jobs"],
        "properties": {
            "time_zone": {"type": "string", "description": "the node's, for cron schedules"},
            "jobs": {"type": "array", "items": _ref("Job")},
        },
    },
    "JobRunList": {
        "type": "object",
        "required": ["runs"],
        "properties": {"runs": {"type": "array", "items": _ref("JobRun")}},
    },
}

PATHS: dict[str, Any] = {
    "/v1/deployments/{name}/exec": {
        "parameters": [_NAME],
        "post": {
            "operationId": "create_exec",
            "summary": "Create a command to run in a running instance; attach to start it",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ExecRequest")}}},
            "responses": {
                "201": _json("ExecCreated", "created; attach within 60 s"),
                **_BODY_ERRORS,
                "409": _error("Conflict"),
                **_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/exec/{id}/attach": {
        "parameters": [
            _NAME,
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "get": {
            "operationId": "attach_exec",
            "summary": "WebSocket: start the exec and carry its stdin, output and resizes",
            "description": (
                "Server to client: binary frames, first byte the stream (1 stdout, 2 stderr), "
                'then a text frame {"exit_code": n}. Client to server: binary frames are stdin; '
                'text frames {"resize": {"rows", "cols"}} or {"stdin_eof": true}.'
            ),
            "parameters": [
                {"name": "rows", "in": "query", "schema": {"type": "integer"}},
                {"name": "cols", "in": "query", "schema": {"type": "integer"}},
            ],
            "responses": {"101": {"description": "switching to WebSocket"}, **_ERRORS},
        },
    },
    "/v1/deployments/{name}/run": {
        "parameters": [_NAME],
        "post": {
            "operationId": "run_oneoff",
            "summary": "Run a one-off container of the deployment and stream its output",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RunRequest")}}},
            "responses": {
                "200": {
                    "description": "JSON lines (chunked) until the one-off exits",
                    "content": {NDJSON: {"schema": _ref("RunOutput")}},
                },
                **_BODY_ERRORS,
                "409": _error("Conflict"),
                **_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/jobs": {
        "parameters": [_NAME],
        "get": {
            "operationId": "list_jobs",
            "summary": "The deployment's scheduled jobs, next and last runs",
            "responses": {"200": _json("JobList", "the jobs"), **_ERRORS},
        },
    },
    "/v1/deployments/{name}/jobs/{job}/run": {
        "parameters": [_NAME, _JOB],
        "post": {
            "operationId": "run_job_now",
            "summary": "Start a run of the job now",
            "responses": {
                "202": _json("JobRun", "started"),
                "409": _error("Conflict"),
                **_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/jobs/{job}/runs": {
        "parameters": [_NAME, _JOB],
        "get": {
            "operationId": "list_job_runs",
            "summary": f"The job's runs, newest first (the last {JOB_RUNS_KEPT} are kept)",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": JOB_RUNS_KEPT},
                }
            ],
            "responses": {
                "200": _json("JobRunList", "the runs"),
                "400": _error("BadRequest"),
                **_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/jobs/{job}/runs/{id}": {
        "parameters": [
            _NAME,
            _JOB,
            {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
        ],
        "get": {
            "operationId": "get_job_run",
            "summary": "One run with its kept output",
            "responses": {"200": _json("JobRun", "the run and its log"), **_ERRORS},
        },
    },
}
