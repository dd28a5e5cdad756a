"""What every API handler shares: the app keys of the daemon's parts, and request parsing.

The keys (``STORE``, ``CONTROLLER``, ``CONFIG``, ``PROXY_CLOSED``) are set by
``build_app`` (patrd/api/app.py); resource modules read them and parse their
query strings and bodies with the helpers here. This module imports nothing
from patrd/api/: every other module of the folder may import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web

from patrd.model.errors import BadRequest
from patrd.model.views import ControllerView
from patrd.settings.config import Config
from patrd.state.store import Store

STORE = web.AppKey("patrd.state.store", Store)
CONTROLLER = web.AppKey[ControllerView]("patrd.control.controller")
CONFIG = web.AppKey("patrd.settings.config", Config)
# Why the proxy listeners are closed (patrd/firewall/fence_gate.py), None while open.
PROXY_CLOSED = web.AppKey[Callable[[], str | None]]("patrd.proxy_closed")

_UINT_RE = re.compile(r"[0-9]{1,18}")


def parts(request: web.Request) -> tuple[Store, ControllerView, Config]:
    """The store, the controller and the config of the app serving ``request``."""
    app = request.app
    return app[STORE], app[CONTROLLER], app[CONFIG]


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 400 for anything that is not one JSON document.

    ``request.read()`` raises ``HTTPRequestEntityTooLarge`` (413) past the
    app's ``client_max_size``.
    """
    if request.content_type != "application/json":
        raise BadRequest(f"Content-Type must be application/json, not {request.content_type!r}")
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("a JSON request body is required")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (the exec, run and job routes' reading of it)."""
    if request.content_type != "application/json":
        raise BadRequest(f"Content-Type must be application/json, not {request.content_type!r}")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", field="body")
    return body


def _reject_constant(name: str) -> NoReturn:
    raise BadRequest(f"request body is not valid JSON: {name} is not a JSON value")


def uint_query(request: web.Request, key: str, *, default: int) -> int:
    values = request.query.getall(key, [])
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"{key} given more than once", field=key)
    if not _UINT_RE.fullmatch(values[0]):
        raise BadRequest(f"{key} must be a non-negative integer, not {values[0]!r}", field=key)
    return int(values[0])


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in {"true", "false", "1", "0", "yes", "no"}:
        raise BadRequest(f"{name} must be true or false", field=name)
    return raw in {"true", "1", "yes"}
