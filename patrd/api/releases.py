"""Releases over HTTP: ``redeploy`` (pull the tag again) and ``revert`` (by REF).

``POST /v1/deployments/{name}/redeploy`` pulls the deployment's tag; a new
digest becomes a new pinned revision (a zero-downtime rollout, a history
entry), the same digest answers "already at sha256:…". ``POST
/v1/deployments/{name}/revert`` takes ``{"ref": REF}``: a revision number, a
digest or an image id prefix (patrd/model/releases.py decides what it names).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from patrd.api.context import parts, read_json
from patrd.api.shapes import deployment_json
from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.errors import BadRequest, Conflict
from patrd.model.releases import Pin
from patrd.model.view_shapes import RedeployedJson


class TagResolver(Protocol):
    """The controller, as ``redeploy`` sees it: pull a tag, say what it points at."""

    async def resolve_tag(self, record: DeploymentRecord) -> tuple[Pin, str | None]: ...


RESOLVER = web.AppKey[TagResolver]("patrd.resolver")


async def redeploy_deployment(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
    resolver = request.app.get(RESOLVER)
    if resolver is None:
        raise Conflict("redeploy is not available on this listener")
    name = request.match_info["name"]
    record = await store.get_deployment(name)
    if record.intent is Intent.DELETE:
        raise Conflict(f"deployment {name!r} is being deleted")
    pin, warning = await resolver.resolve_tag(record)
    record, changed = await store.redeploy(name, pin)
    if changed:
        controller.wake(record.id)
        message = f"revision {record.revision} pins {pin.short}"
    else:
        message = f"already at {pin.short}"
    body: RedeployedJson = {
        **deployment_json(record, config),
        "redeploy": {
            "changed": changed,
            "digest": pin.digest,
            "image_id": pin.image_id,
            "message": message,
            "warning": warning,
        },
    }
    return web.json_response(body, status=202 if changed else 200)


async def revert_by_ref(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
    body = await read_json(request)
    ref = body.get("ref") if isinstance(body, dict) else None
    if isinstance(ref, int) and not isinstance(ref, bool):
        ref = str(ref)
    if not isinstance(ref, str) or not ref:
        raise BadRequest("ref must be a revision number, a digest or an image id", field="ref")
    record = await store.revert(request.match_info["name"], ref)
    controller.wake(record.id)
    return web.json_response(deployment_json(record, config), status=202)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/deployments/{name}/redeploy", redeploy_deployment, name="redeploy_deployment")
    r.add_post("/v1/deployments/{name}/revert", revert_by_ref, name="revert_by_ref")
