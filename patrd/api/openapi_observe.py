"""Logs, metrics, Prometheus and cost (patrd/api/observe.py)."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import COMMON_ERRORS, NAME_PARAM, TIMESTAMP, error, json_body, query, ref

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
OBSERVE_SCHEMAS: dict[str, Any] = {
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
            "t": TIMESTAMP,
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
            "at": TIMESTAMP,
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
            "current": {"type": "array", "items": ref("InstanceMetrics")},
            "points": {"type": "array", "items": ref("MetricsPoint")},
        },
    },
}


OBSERVE_PATHS: dict[str, Any] = {
    "/v1/deployments/{name}/logs": {
        "parameters": [NAME_PARAM],
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
                query(
                    "tail",
                    "at most this many newest lines (default 1000, or all since `since`; "
                    "max 100000)",
                    {"type": "string", "example": "100"},
                ),
                query("since", "RFC 3339 or unix seconds", {"type": "string"}),
                query("until", "RFC 3339 or unix seconds", {"type": "string"}),
                query(
                    "instance",
                    "instance name (web-0) or container id prefix; 400 when it names no "
                    "instance and no kept logs",
                    {"type": "string"},
                ),
                query("follow", "stream new lines", {"type": "boolean", "default": False}),
                query(
                    "format",
                    "json: one LogLine per line; text: '<t> <instance> <stream>: <line>'",
                    {"type": "string", "enum": ["json", "text"], "default": "json"},
                ),
            ],
            "responses": {
                "200": {
                    "description": "the lines (chunked)",
                    "content": {
                        "application/x-ndjson": {"schema": ref("LogLine")},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "400": error("BadRequest"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/deployments/{name}/metrics": {
        "parameters": [NAME_PARAM],
        "get": {
            "operationId": "metrics",
            "summary": "CPU, memory, network and block I/O history, summed over instances",
            "parameters": [
                query(
                    "range",
                    "hour: raw samples; day: 1-minute, week: 15-minute, month: 1-hour buckets",
                    {
                        "type": "string",
                        "enum": ["hour", "day", "week", "month"],
                        "default": "hour",
                    },
                ),
                query("instance", "one instance (web-0) instead of the sum", {"type": "string"}),
            ],
            "responses": {
                "200": json_body("Metrics", "the history and the latest sample per instance"),
                "400": error("BadRequest"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
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
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        }
    },
}
