"""``GET /v1/nodes`` and ``POST /v1/nodes/{node}/drain|activate``.

With ``engine.backend = "swarm"`` every node of the swarm (patrd/control/nodes.py
drains without dropping requests); with ``"docker"`` the one local node,
which cannot be drained (409).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from patrd.engine.swarm import NodeInfo
from patrd.model.errors import EngineError


class NodesView(Protocol):
    async def list(self) -> list[NodeInfo]: ...
    async def drain(self, node: str) -> NodeInfo: ...
    async def activate(self, node: str) -> NodeInfo: ...


NODES = web.AppKey[NodesView]("patrd.nodes")


def node_json(node: NodeInfo) -> dict[str, Any]:
    """The JSON shape of one node (schema ``ClusterNode`` in openapi_nodes.py)."""
    return {
        "id": node.node_id,
        "hostname": node.hostname,
        "address": node.address or None,
        "role": node.role,
        "leader": node.leader,
        "state": node.state,
        "availability": node.availability,
        "cpus": node.cpus,
        "memory_bytes": node.memory_bytes,
        "labels": dict(node.labels),
        "instances": node.instances,
        "agent": node.agent,
    }


def _view(request: web.Request) -> NodesView:
    view = request.app.get(NODES)
    if view is None:
        raise EngineError("the node view is not available in this daemon")
    return view


async def list_nodes(request: web.Request) -> web.Response:
    nodes = await _view(request).list()
    return web.json_response({"nodes": [node_json(n) for n in nodes]})


async def drain_node(request: web.Request) -> web.Response:
    node = await _view(request).drain(request.match_info["node"])
    return web.json_response(node_json(node))


async def activate_node(request: web.Request) -> web.Response:
    node = await _view(request).activate(request.match_info["node"])
    return web.json_response(node_json(node))


def add_node_routes(app: web.Application, nodes: NodesView | None) -> None:
    if nodes is not None:
        app[NODES] = nodes
    r = app.router
    r.add_get("/v1/nodes", list_nodes, name="nodes", allow_head=False)
    r.add_post("/v1/nodes/{node}/drain", drain_node, name="node_drain")
    r.add_post("/v1/nodes/{node}/activate", activate_node, name="node_activate")
