"""``POST /v1/registry/events``: the node registry's push notifications → rollouts.

Authenticated by the shared secret the registry was configured with (not the
API token): nothing in a notification can do more than roll a deployment
that has this image, this tag and deploy on push to the pushed digest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aiohttp import web

from patrd.api.context import CONFIG, CONTROLLER, STORE
from patrd.api.errors import error_response
from patrd.model.errors import BadRequest, NotFound
from patrd.model.spec import LOCAL_REGISTRY, DeploymentSpec
from patrd.model.view_shapes import PushResultJson, RegistryLoginJson
from patrd.registry.auth import USERNAME, login_line, password_path
from patrd.registry.node import (
    EVENTS_CONTENT_TYPE,
    MAX_EVENTS_BODY,
    PushEvent,
    authorized,
    parse_events,
)


@dataclass(frozen=True, slots=True)
class RegistryHook:
    secret: str
    host: str  # host:port the deployments pull from (the node registry)


REGISTRY_HOOK = web.AppKey("patrd.registry_hook", RegistryHook)


async def registry_events(request: web.Request) -> web.Response:
    hook = request.app.get(REGISTRY_HOOK)
    if hook is None:
        raise NotFound("deploy on push is off: no node registry ([registry] enabled = false)")
    if not authorized(request.headers.get("Authorization"), hook.secret):
        return error_response(
            401,
            "unauthorized",
            "bad or missing registry secret",
            headers={"WWW-Authenticate": "Bearer"},
        )
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
    if content_type not in (EVENTS_CONTENT_TYPE, "application/json"):
        raise BadRequest(f"content type must be {EVENTS_CONTENT_TYPE}")
    body = await request.content.read(MAX_EVENTS_BODY + 1)
    pushes = parse_events(body)
    store, controller = request.app[STORE], request.app[CONTROLLER]
    rolled: list[str] = []
    for push in pushes:
        ref = f"{hook.host}/{push.repository}@{push.digest}"
        matches = functools.partial(_pushed_to, hook.host, push)
        for record in await store.deploy_pushed(matches, ref, push.at):
            controller.wake(record.id)
            rolled.append(record.name)
    result: PushResultJson = {"pushes": len(pushes), "rollouts": rolled}
    return web.json_response(result, status=202)


def _pushed_to(host: str, push: PushEvent, spec: DeploymentSpec) -> bool:
    """Does ``push`` concern a deployment with ``spec``? Node registry, same image and tag."""
    return (
        spec.registry in (LOCAL_REGISTRY, host)
        and spec.image == push.repository
        and spec.tag == push.tag
    )


async def registry_login(request: web.Request) -> web.Response:
    """``GET /v1/registry/login``: where the node registry's credential is, never its value."""
    config = request.app[CONFIG]
    registry = config.registry
    if not registry.enabled:
        raise NotFound("the node registry is off ([registry] enabled = false)")
    body: RegistryLoginJson = {
        "registry": registry.host,
        "auth": "none",
        "username": None,
        "password_file": None,
        "login": None,
    }
    if registry.htpasswd_file is not None:
        body["auth"] = "htpasswd_file"
        body["login"] = f"docker login {registry.host}  # a user of {registry.htpasswd_file}"
    elif registry.auth:
        data_dir = config.daemon.data_dir
        body["auth"] = "generated"
        body["username"] = USERNAME
        body["password_file"] = str(password_path(data_dir))
        body["login"] = login_line(registry.host, data_dir)
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/registry/events", registry_events, name="registry_events")
    r.add_get("/v1/registry/login", registry_login, name="registry_login", allow_head=False)
