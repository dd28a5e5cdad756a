"""``/v1/notifications`` and ``/v1/node`` (patrd/notify/, patrd/observe/nodehealth.py).

* ``GET /v1/notifications``: every target ([[notify]] ones with
  ``source: "config"``, runtime ones with ``source: "api"``), its delivery
  counts, and the notification kinds there are.
* ``POST /v1/notifications``: a runtime target, stored; ``secret`` and
  ``password_secret`` *name* vault secrets (never a value).
* ``DELETE /v1/notifications/{name}``: runtime targets only (409 for config).
* ``POST /v1/notifications/{name}/test``: queue a ``notify.test`` to it.
* ``GET /v1/node``: host CPU, memory, swap, load, disks, network (fresh
  reading), the thresholds, and the node's newest events.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from patrd.api.context import read_json, rfc3339
from patrd.model.errors import BadRequest, Conflict, NotFound, SpecError
from patrd.notify.dispatcher import Dispatcher
from patrd.notify.rules import KINDS, Notification
from patrd.notify.targets import Target, parse_target
from patrd.observe.nodehealth import NodeWatcher

NOTIFY = web.AppKey("patrd.notify", Dispatcher)
NODE = web.AppKey("patrd.node", NodeWatcher)

NODE_EVENTS_DEFAULT = 20
NODE_EVENTS_MAX = 1000


def add_routes(app: web.Application) -> None:
    """Registered by ``build_app``; the OpenAPI document lists these too."""
    r = app.router
    r.add_get("/v1/notifications", list_notifications, name="list_notifications", allow_head=False)
    r.add_post("/v1/notifications", create_notification, name="create_notification")
    r.add_delete(
        "/v1/notifications/{notification}", delete_notification, name="delete_notification"
    )
    r.add_post("/v1/notifications/{notification}/test", test_notification, name="test_notification")
    r.add_get("/v1/node", node_health, name="node", allow_head=False)


def _dispatcher(request: web.Request) -> Dispatcher:
    found = request.app.get(NOTIFY)
    if found is None:
        raise web.HTTPServiceUnavailable(text="notifications are not wired in this daemon")
    return found


def target_json(target: Target, dispatcher: Dispatcher) -> dict[str, Any]:
    stats = dispatcher.stats
    return {
        **target.public_json(),
        "source": target.source,
        "sent": stats.deliveries.get((target.name, "sent"), 0),
        "failed": stats.deliveries.get((target.name, "failed"), 0),
        "retries": stats.retries.get(target.name, 0),
    }


async def list_notifications(request: web.Request) -> web.Response:
    dispatcher = _dispatcher(request)
    return web.json_response(
        {
            "notifications": [target_json(t, dispatcher) for t in dispatcher.targets()],
            "kinds": dict(KINDS),
            "queued": dispatcher.stats.queued,
            "dropped": dispatcher.stats.dropped,
        }
    )


async def create_notification(request: web.Request) -> web.Response:
    dispatcher = _dispatcher(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise SpecError("body", "must be a JSON object")
    target = parse_target(body, source="api")
    if any(t.name == target.name for t in dispatcher.targets()):
        raise Conflict(f"notification {target.name!r} already exists")
    await dispatcher.store.create_notification(target.name, target.to_json())
    await dispatcher.reload()
    return web.json_response(target_json(target, dispatcher), status=201)


async def delete_notification(request: web.Request) -> web.Response:
    dispatcher = _dispatcher(request)
    name = request.match_info["notification"]
    target = _find(dispatcher, name)
    if target.source == "config":
        raise Conflict(f"notification {name!r} is defined in the config file ([[notify]])")
    await dispatcher.store.delete_notification(name)
    await dispatcher.reload()
    return web.Response(status=204)


async def test_notification(request: web.Request) -> web.Response:
    dispatcher = _dispatcher(request)
    target = _find(dispatcher, request.match_info["notification"])
    note = Notification(
        id=f"t{int(time.time() * 1000)}",
        kind="notify.test",
        event="notify.test",
        message=f"test notification to {target.name}",
        at=time.time(),
        node=dispatcher.node,
    )
    dispatcher.submit(note, only=target)
    return web.json_response({"queued": True, "id": note.id}, status=202)


async def node_health(request: web.Request) -> web.Response:
    watcher = request.app.get(NODE)
    if watcher is None:
        raise web.HTTPServiceUnavailable(text="node health is not wired in this daemon")
    limit_text = request.query.get("events", str(NODE_EVENTS_DEFAULT))
    if not limit_text.isdigit() or not 0 <= int(limit_text) <= NODE_EVENTS_MAX:
        raise BadRequest(f"events must be an integer 0..{NODE_EVENTS_MAX}", field="events")
    snap = await watcher.snapshot()
    events = await watcher.store.node_events(limit=int(limit_text)) if int(limit_text) else []
    config = watcher.config
    return web.json_response(
        {
            **snap.to_json(),
            "thresholds": {
                "disk_low_percent": config.disk_low_percent,
                "memory_low_percent": config.memory_low_percent,
            },
            "alerts": sorted(watcher.alerted),
            "events": [
                {"id": e.id, "at": rfc3339(e.at), "kind": e.kind, "message": e.message}
                for e in events
            ],
        }
    )


def _find(dispatcher: Dispatcher, name: str) -> Target:
    for target in dispatcher.targets():
        if target.name == name:
            return target
    raise NotFound(f"notification {name!r} not found")
