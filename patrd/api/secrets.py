"""``/v1/secrets``: write-only values; reads give names, times and users, never a value.

Below the ``write`` scope (patrd/model/scopes.py) a read gives the name only: the
version, times and the deployments using a secret are metadata too.
"""

from __future__ import annotations

from aiohttp import web

from patrd.api.context import CONTROLLER, STORE, read_json, rfc3339
from patrd.api.principal import scope_of
from patrd.model.errors import SpecError
from patrd.model.records import SecretRecord
from patrd.model.scopes import Scope
from patrd.model.view_shapes import DeletedJson, SecretJson, SecretListJson
from patrd.state.crypto import SecretsKeyError
from patrd.state.vault import Vault

VAULT = web.AppKey("patrd.state.vault", Vault)


def _vault(request: web.Request) -> Vault:
    vault = request.app.get(VAULT)
    if vault is None:
        raise SecretsKeyError("secrets are not available: the daemon has no secrets key")
    return vault


async def list_secrets(request: web.Request) -> web.Response:
    records = await request.app[STORE].list_secrets()
    full = scope_of(request) >= Scope.WRITE
    body: SecretListJson = {"secrets": [secret_json(r, full=full) for r in records]}
    return web.json_response(body)


async def create_secret(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise SpecError("body", "must be a JSON object")
    unknown = set(body) - {"name", "value"}
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown field; allowed: name, value")
    for key in ("name", "value"):
        if key not in body:
            raise SpecError(key, "is required")
    record = await _vault(request).create(body["name"], body["value"])
    return web.json_response(secret_json(record), status=201)


async def get_secret(request: web.Request) -> web.Response:
    record = await request.app[STORE].get_secret(request.match_info["name"])
    return web.json_response(secret_json(record, full=scope_of(request) >= Scope.WRITE))


async def put_secret(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"value"}:
        raise SpecError("value", 'the body is {"value": "..."}')
    record = await _vault(request).update(request.match_info["name"], body["value"])
    controller = request.app[CONTROLLER]
    controller.wake()  # deployments using it roll to the new value
    return web.json_response(secret_json(record))


async def delete_secret(request: web.Request) -> web.Response:
    await request.app[STORE].delete_secret(request.match_info["name"])
    body: DeletedJson = {"deleted": request.match_info["name"]}
    return web.json_response(body)


def secret_json(record: SecretRecord, *, full: bool = True) -> SecretJson:
    """``full=False``: the name only (below the write scope the rest is metadata too)."""
    if not full:
        return {"name": record.name}
    return {
        "name": record.name,
        "version": record.version,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
        "used_by": list(record.used_by),
    }


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/secrets", list_secrets, name="list_secrets", allow_head=False)
    r.add_post("/v1/secrets", create_secret, name="create_secret")
    r.add_get("/v1/secrets/{name}", get_secret, name="get_secret", allow_head=False)
    r.add_put("/v1/secrets/{name}", put_secret, name="put_secret")
    r.add_delete("/v1/secrets/{name}", delete_secret, name="delete_secret")
