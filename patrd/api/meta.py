"""``GET /v1/health`` and ``GET /v1/openapi.json``: the API about itself."""

from __future__ import annotations

from aiohttp import web

from patrd import __version__
from patrd.api.context import PROXY_CLOSED
from patrd.api.openapi import OPENAPI
from patrd.model.view_shapes import HealthJson


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/health", health, name="health", allow_head=False)
    r.add_get("/v1/openapi.json", openapi_document, name="openapi", allow_head=False)


async def health(request: web.Request) -> web.Response:
    """200 while the API answers; ``degraded`` with the reasons when something is fenced off."""
    problems = []
    closed = request.app.get(PROXY_CLOSED)
    reason = closed() if closed is not None else None
    if reason:
        problems.append(reason)
    body: HealthJson = {
        "status": "degraded" if problems else "ok",
        "version": __version__,
        "problems": problems,
    }
    return web.json_response(body)


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)
