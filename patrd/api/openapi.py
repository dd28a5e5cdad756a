"""The OpenAPI 3.0 document of the local API, served at ``GET /v1/openapi.json``.

Assembled here from one fragment per area (patrd/api/openapi_*.py); the
request shapes of a deployment come from the same declarations the API
validates with (patrd/model/spec_shapes.py). Nothing is patched after it is
built: ``document()`` merges the fragments into fresh dicts and adds the
``links`` that take a client (and the fuzzer, tests/integration/
test_api_fuzz.py) from a create to every operation on what it created.
A unit test checks that its paths and methods are exactly the routes the
aiohttp router serves, in both directions.
"""

from __future__ import annotations

from typing import Any

from patrd import __version__
from patrd.api import (
    openapi_backups,
    openapi_nodes,
    openapi_notify,
    openapi_observe,
    openapi_paths,
    openapi_releases,
    openapi_runs,
    openapi_spec,
    openapi_urls,
    openapi_views,
)
from patrd.api.openapi_access import ACCESS_PATHS, ACCESS_SCHEMAS
from patrd.api.openapi_kit import PARAMETERS, RESPONSES

# A created resource's key (response body field) → the path parameter it fills.
_CREATORS: tuple[tuple[str, str, str, str], ...] = (
    # (path of the create, status, response field, path parameter)
    ("/v1/deployments", "201", "name", "name"),
    ("/v1/urls", "201", "id", "id"),
    ("/v1/secrets", "201", "name", "name"),
    ("/v1/tokens", "201", "name", "name"),
    ("/v1/notifications", "201", "name", "notification"),
)


def _paths() -> dict[str, Any]:
    return {
        **openapi_paths.PATHS,
        **openapi_urls.URL_PATHS,
        **openapi_observe.OBSERVE_PATHS,
        **ACCESS_PATHS,
        **openapi_backups.BACKUP_PATHS,
        **openapi_notify.PATHS,
        **openapi_releases.RELEASE_PATHS,
        **openapi_runs.PATHS,
        **openapi_nodes.PATHS,
    }


def _schemas() -> dict[str, Any]:
    return {
        **openapi_views.VIEW_SCHEMAS,
        **openapi_spec.SPEC_SCHEMAS,
        **openapi_urls.URL_SCHEMAS,
        **openapi_observe.OBSERVE_SCHEMAS,
        **ACCESS_SCHEMAS,
        **openapi_backups.BACKUP_SCHEMAS,
        **openapi_notify.SCHEMAS,
        **openapi_releases.RELEASE_SCHEMAS,
        **openapi_runs.SCHEMAS,
        **openapi_nodes.SCHEMAS,
    }


def _parameters() -> dict[str, Any]:
    return {**PARAMETERS, "url_id": openapi_urls.URL_ID_PARAMETER}


def _path_parameters(item: dict[str, Any], op: dict[str, Any]) -> set[str]:
    names = set()
    for param in [*item.get("parameters", []), *op.get("parameters", [])]:
        if "$ref" in param:
            param = _parameters()[param["$ref"].rsplit("/", 1)[-1]]
        if param.get("in") == "path":
            names.add(param["name"])
    return names


def links(paths: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(create path, status) → its links: one to every operation under the created resource.

    An operation is under ``/v1/deployments`` when its path starts with
    ``/v1/deployments/{name}``; its only parameter filled from the create
    is that one (others, like a config file name, are generated).
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for create, status, field, param in _CREATORS:
        prefix = f"{create}/{{{param}}}"
        out: dict[str, Any] = {}
        for path, item in paths.items():
            if not (path == prefix or path.startswith(prefix + "/")):
                continue
            for method, op in item.items():
                if method == "parameters" or param not in _path_parameters(item, op):
                    continue
                values = {param: f"$response.body#/{field}"}
                if any(
                    q.get("name") == "confirm" and q.get("required")
                    for q in op.get("parameters", [])
                ):
                    # A deletion asks for the name again (?confirm=NAME).
                    values["query.confirm"] = f"$response.body#/{field}"
                out[op["operationId"]] = {"operationId": op["operationId"], "parameters": values}
        found[(create, status)] = out
    return found


def _with_links(paths: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``paths`` whose create responses carry their links."""
    out = dict(paths)
    for (create, status), found in links(paths).items():
        post = paths[create]["post"]
        responses = {**post["responses"], status: {**post["responses"][status], "links": found}}
        out[create] = {**paths[create], "post": {**post, "responses": responses}}
    return out


def document() -> dict[str, Any]:
    return {
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
        "paths": _with_links(_paths()),
        "components": {
            "schemas": _schemas(),
            "responses": RESPONSES,
            "parameters": _parameters(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


OPENAPI: dict[str, Any] = document()
