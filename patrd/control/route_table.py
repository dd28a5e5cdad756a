"""Which hostnames route where: deployment snapshots → proxy routes. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from patrd.model.deployment import Status
from patrd.model.urls import DeploymentTarget, ProxyTarget, RedirectTarget, UrlRecord
from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable

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
    # (container port, port dialled at ip) where they differ: Swarm's host-mode
    # published ports (patrd/engine/swarm.py); empty on one node.
    ports: tuple[tuple[int, int], ...] = ()

    def reach(self, port: int) -> int:
        return dict(self.ports).get(port, port)


@dataclass(frozen=True, slots=True)
class DeploymentSnapshot:
    """What the proxy needs to know of one deployment, as the controller sees it."""

    name: str
    status: Status
    ports: tuple[int, ...]
    ready: tuple[ReadyInstance, ...]
    # A stop-first swap (volumes) is under way: with no ready instance, the
    # proxy holds new requests for the new one (patrd/proxy/hold.py).
    holding: bool = False


def default_host(port: int, deployment: str, base_domain: str) -> str:
    """The seed's default URL: ``<port>-<name>.<base_domain>``."""
    return f"{port}-{deployment}.{base_domain}"


def build_routes(
    snapshots: Iterable[DeploymentSnapshot],
    base_domain: str,
    urls: Iterable[UrlRecord] = (),
    *,
    redirect_default_urls: bool = False,
) -> RoutingTable:
    """Every exposed port of every deployment gets its default hostname, and
    every managed URL its (domain, path) route.

    A deployment that is not running still gets a route, so the proxy can say
    503 "stopped"/"deploying" instead of an anonymous 404. Ready instances of a
    deployment that is (re)deploying keep serving: the route is marked running
    whenever at least one instance is ready. A managed URL on a default
    hostname's ``/`` replaces the default route.
    """
    by_name: dict[str, DeploymentSnapshot] = {}
    routes: list[Route] = []
    taken: set[tuple[str, str]] = set()
    for record in urls:
        taken.add((record.spec.domain, record.spec.path))
    for snap in snapshots:
        by_name[snap.name] = snap
        route_status = _route_status(snap)
        if route_status is None:  # deleting: gone from the proxy
            continue
        for port in snap.ports:
            host = default_host(port, snap.name, base_domain)
            if (host, "/") in taken:
                continue
            routes.append(
                Route(
                    host=host,
                    path_prefix="/",
                    deployment=snap.name,
                    port=port,
                    status=route_status,
                    backends=tuple(Backend(r.name, r.ip, r.reach(port)) for r in snap.ready),
                    https_redirect=redirect_default_urls,
                    hold=snap.holding,
                )
            )
    for record in urls:
        routes.append(url_route(record, by_name.get(record.spec.deployment or "")))
    return RoutingTable.build(routes)


def url_route(record: UrlRecord, snap: DeploymentSnapshot | None) -> Route:
    """The proxy route of one managed URL (``snap``: its deployment, if it targets one)."""
    spec = record.spec
    target = spec.target
    if isinstance(target, DeploymentTarget):
        status = _route_status(snap) if snap is not None else RouteStatus.DEPLOYING
        hold = snap is not None and snap.holding
        backends: tuple[Backend, ...] = ()
        if snap is not None and target.port in snap.ports:
            backends = tuple(Backend(r.name, r.ip, r.reach(target.port)) for r in snap.ready)
        elif snap is not None:
            status = RouteStatus.ERRORED  # the deployment no longer exposes that port
            hold = False
        return Route(
            deployment=target.deployment,
            port=target.port,
            status=status or RouteStatus.DEPLOYING,
            backends=backends,
            host=spec.domain,
            path_prefix=spec.path,
            https_redirect=spec.http_redirect,
            max_body_bytes=spec.max_body_bytes,
            hold=hold,
            timeouts=spec.timeouts,
        )
    if isinstance(target, RedirectTarget):
        return Route(
            deployment="",
            port=0,
            status=RouteStatus.RUNNING,
            backends=(),
            redirect=target.url,
            redirect_status=target.status,
            host=spec.domain,
            path_prefix=spec.path,
            https_redirect=spec.http_redirect,
            max_body_bytes=spec.max_body_bytes,
        )
    assert isinstance(target, ProxyTarget)
    tls, host, port, base = target.parts
    default_port = 443 if tls else 80
    return Route(
        deployment=f"proxy {host}",
        port=port,
        status=RouteStatus.RUNNING,
        backends=(Backend("proxy", host, port, tls=tls),),
        upstream_host=host if port == default_port else f"{host}:{port}",
        upstream_path=base,
        host=spec.domain,
        path_prefix=spec.path,
        https_redirect=spec.http_redirect,
        max_body_bytes=spec.max_body_bytes,
        timeouts=spec.timeouts,
    )


def _route_status(snap: DeploymentSnapshot) -> RouteStatus | None:
    route_status = _ROUTE_STATUS.get(snap.status)
    if route_status is None:
        return None
    if (snap.ready or snap.holding) and route_status in (
        RouteStatus.DEPLOYING,
        RouteStatus.ERRORED,
    ):
        return RouteStatus.RUNNING
    return route_status
