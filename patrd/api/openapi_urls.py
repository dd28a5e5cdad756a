"""Managed URLs and certificates (patrd/api/urls.py)."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import (
    BODY_ERRORS,
    COMMON_ERRORS,
    JSON,
    NULLABLE_TIME,
    TIMESTAMP,
    error,
    json_body,
    ref,
)
from patrd.model import spec
from patrd.model.urls import DOMAIN_PATTERN

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
        "minLength": 1,
        "maxLength": 253,
        "pattern": DOMAIN_PATTERN,
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
URL_SCHEMAS: dict[str, Any] = {
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
            "expires_at": NULLABLE_TIME,
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
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "tls": ref("UrlTls"),
        },
    },
    "UrlList": {
        "type": "object",
        "required": ["urls"],
        "properties": {"urls": {"type": "array", "items": ref("Url")}},
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
            "not_before": NULLABLE_TIME,
            "not_after": NULLABLE_TIME,
            "renew_at": NULLABLE_TIME,
            "error": {"type": "string"},
            "failures": {"type": "integer", "description": "failed attempts in a row"},
            "next_attempt_at": NULLABLE_TIME,
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
        "properties": {"certificates": {"type": "array", "items": ref("Certificate")}},
    },
}
URL_ID_PARAMETER: dict[str, Any] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "managed URL id",
    "schema": {"type": "string"},
}
_URL_ID_PARAM = {"$ref": "#/components/parameters/url_id"}
URL_PATHS: dict[str, Any] = {
    "/v1/urls": {
        "get": {
            "operationId": "list_urls",
            "summary": "Managed URLs, by domain and path, with their certificate status",
            "responses": {"200": json_body("UrlList", "the URLs"), **COMMON_ERRORS},
        },
        "post": {
            "operationId": "create_url",
            "summary": "Add a managed URL; its certificate is issued in the background",
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("CreateUrl")}}},
            "responses": {
                "201": {
                    **json_body("Url", "created"),
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                **BODY_ERRORS,
                "409": error("Conflict"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/urls/{id}": {
        "parameters": [_URL_ID_PARAM],
        "get": {
            "operationId": "get_url",
            "summary": "One managed URL",
            "responses": {
                "200": json_body("Url", "the URL"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
        "patch": {
            "operationId": "update_url",
            "summary": "Change a managed URL's domain, path, target or http_redirect",
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("UpdateUrl")}}},
            "responses": {
                "200": json_body("Url", "the URL after the change"),
                **BODY_ERRORS,
                "404": error("NotFound"),
                "409": error("Conflict"),
                **COMMON_ERRORS,
            },
        },
        "delete": {
            "operationId": "delete_url",
            "summary": "Remove a managed URL (its certificate file is kept)",
            "responses": {
                "200": json_body("Url", "the URL removed"),
                "404": error("NotFound"),
                **COMMON_ERRORS,
            },
        },
    },
    "/v1/certificates": {
        "get": {
            "operationId": "list_certificates",
            "summary": "Every certificate patrd serves or wants, with renewal bookkeeping",
            "responses": {
                "200": json_body("CertificateList", "the certificates"),
                **COMMON_ERRORS,
            },
        }
    },
}
