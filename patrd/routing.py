"""Which hostnames route where: deployment snapshots → proxy routes. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.store import Status

_ROUTE_STATUS = {
    Status.CREATED: RouteStatus.CREATED,
    Status.DEPLOYING: RouteStatus.DEPLOYING,
    Status.RUNNING: RouteStatus.RUNNING,
    Status.STOPPED: RouteStatus.STOPPED,
    Status.ERRORED: RouteStatus.ERRORED,
}


@dataclass(frozen=True, slots=True)
class ReadyInstance:
    name: str
    ip: str


@dataclass(frozen=True, slots=True)
class DeploymentSnapshot:
    """What the proxy needs to know of one deployment, as the controller sees it."""

    name: str
    status: Status
    ports: tuple[int, ...]
    ready: tuple[ReadyInstance, ...]


def default_host(port: int, deployment: str, base_domain: str) -> str:
    """The seed's default URL: ``<port>-<name>.<base_domain>``."""
    return f"{port}-{deployment}.{base_domain}"


def build_routes(snapshots: Iterable[DeploymentSnapshot], base_domain: str) -> RoutingTable:
    """Every exposed port of every deployment gets its default hostname.

    A deployment that is not running still gets a route, so the proxy can say
    503 "stopped"/"deploying" instead of an anonymous 404. Ready instances of a
    deployment that is (re)deploying keep serving: the route is marked running
    whenever at least one instance is ready.
    """
    routes = []
    for snap in snapshots:
        route_status = _ROUTE_STATUS.get(snap.status)
        if route_status is None:  # deleting: gone from the proxy
            continue
        if snap.ready and route_status in (RouteStatus.DEPLOYING, RouteStatus.ERRORED):
            route_status = RouteStatus.RUNNING
        for port in snap.ports:
            routes.append(
                Route(
                    host=default_host(port, snap.name, base_domain),
                    path_prefix="/",
                    deployment=snap.name,
                    port=port,
                    status=route_status,
                    backends=tuple(Backend(r.name, r.ip, port) for r in snap.ready),
                )
            )
    return RoutingTable.build(routes)
