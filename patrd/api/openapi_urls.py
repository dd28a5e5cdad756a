"""Managed URLs and certificates (patrd/api/urls.py)."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi_kit import BODY_ERRORS, COMMON_ERRORS, JSON, error, json_body, ref
from patrd.model.view_shapes import url_request_schemas

# CreateUrl and UpdateUrl come from a URL's one declaration (patrd/model/url_shapes.py);
# Url, UrlTls, UrlList, Certificate and CertificateList are views (patrd/model/view_shapes.py).
URL_SCHEMAS: dict[str, Any] = url_request_schemas()
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
