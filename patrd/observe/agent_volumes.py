"""The agent's volume routes: a deployment's volumes on this node, for the manager.

A local volume lives on the node whose task first used it; the manager's
Docker API can neither list nor remove it. So the manager asks each node's
agent (patrd/observe/agent_client.py ``AgentVolumes``):

* ``GET /v1/agent/volumes?owner=O&deployment=D`` → ``{"volumes": [{name,
  deployment, volume, slot}]}``: patrd's volumes of that install here;
* ``DELETE /v1/agent/volumes/{name}?owner=O`` → ``{"removed": bool}`` (False:
  not here). 409 when the volume is not that owner's patrd volume (never
  someone else's) or is still in use after a bounded wait.

Both behind the agent's token (patrd/observe/agent.py). The manager decides
what goes (scale-down with ``confirm_volume_loss``, delete with
``delete_volumes``), as for volumes on its own node.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from patrd.engine.swarm_node import NodeDocker
from patrd.model.errors import Conflict, EngineError
from patrd.model.instances import VolumeInfo

VOLUMES_PATH = "/v1/agent/volumes"


def volume_json(v: VolumeInfo) -> dict[str, Any]:
    return {"name": v.name, "deployment": v.deployment, "volume": v.volume, "slot": v.slot}


def volume_from_json(body: Any) -> VolumeInfo:
    """One listed volume; ``ValueError`` when it is not one. No mountpoint: it is
    a path on the agent's node, meaningless on the manager."""
    if not isinstance(body, dict):
        raise ValueError("a volume must be an object")
    name, deployment, volume, slot = (body.get(k) for k in ("name", "deployment", "volume", "slot"))
    if not all(isinstance(x, str) for x in (name, deployment, volume)):
        raise ValueError("a volume needs name, deployment and volume")
    if not isinstance(slot, int) or isinstance(slot, bool):
        raise ValueError("a volume's slot must be a number")
    return VolumeInfo(
        name=str(name), deployment=str(deployment), volume=str(volume), slot=slot, mountpoint=""
    )


def add_volume_routes(app: web.Application, docker: NodeDocker) -> None:
    def owner_of(request: web.Request) -> str:
        owner = request.query.get("owner", "")
        if not owner:
            raise web.HTTPBadRequest(text="owner: the patrd install's owner ID is required")
        return owner

    async def listed(request: web.Request) -> web.Response:
        owner = owner_of(request)
        try:
            found = await docker.owned_volumes(owner, request.query.get("deployment", ""))
        except EngineError as exc:
            raise web.HTTPServiceUnavailable(text=f"this node's Docker engine: {exc}") from exc
        return web.json_response({"volumes": [volume_json(v) for v in found]})

    async def remove(request: web.Request) -> web.Response:
        owner = owner_of(request)
        try:
            removed = await docker.remove_owned_volume(request.match_info["name"], owner)
        except Conflict as exc:
            raise web.HTTPConflict(text=str(exc)) from exc
        except EngineError as exc:
            raise web.HTTPServiceUnavailable(text=f"this node's Docker engine: {exc}") from exc
        return web.json_response({"removed": removed})

    app.router.add_get(VOLUMES_PATH, listed, allow_head=False)
    app.router.add_delete(VOLUMES_PATH + "/{name}", remove)
