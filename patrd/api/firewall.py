"""``GET /v1/firewall``: the ruleset patrd loads (a dry run when disabled) and its counters."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from patrd.api.context import CONFIG, rfc3339
from patrd.firewall.apply import FirewallStatus
from patrd.firewall.rules import render, rules_from_config
from patrd.model.view_shapes import FirewallJson
from patrd.settings.config import Config


class FirewallView(Protocol):
    """What the API may ask of the firewall keeper."""

    async def status(self) -> FirewallStatus: ...


FIREWALL = web.AppKey[FirewallView]("patrd.firewall.rules")


async def firewall_status(request: web.Request) -> web.Response:
    keeper = request.app.get(FIREWALL)
    if keeper is not None:
        status = await keeper.status()
    else:  # an app built without a keeper (tests): what the config alone would load
        config: Config = request.app[CONFIG]
        ruleset = render(rules_from_config(config))
        status = FirewallStatus(enabled=config.firewall.enabled, applied=False, ruleset=ruleset)
    return web.json_response(status_json(status))


def status_json(status: FirewallStatus) -> FirewallJson:
    """The view of ``GET /v1/firewall`` (``Firewall``, patrd/model/view_shapes.py)."""
    return {
        "enabled": status.enabled,
        "applied": status.applied,
        "ruleset": status.ruleset,
        "counters": {
            name: {"packets": c.packets, "bytes": c.bytes} for name, c in status.counters.items()
        },
        "error": status.error,
        "applied_at": rfc3339(status.applied_at) if status.applied_at is not None else None,
        "loads": status.loads,
    }


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/firewall", firewall_status, name="firewall", allow_head=False)
