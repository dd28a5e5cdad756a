"""Requests held during a stop-first swap: the held set, the route flag, the wire format."""

from __future__ import annotations

import asyncio

from patrd.control.route_table import DeploymentSnapshot, ReadyInstance, build_routes
from patrd.model.deployment import Status
from patrd.proxy import wire
from patrd.proxy.hold import HeldRequests
from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions

HOST = "80-web.example.test"


def table(*, hold: bool, backends: tuple[Backend, ...] = ()) -> RoutingTable:
    route = Route(HOST, "/", "web", 80, RouteStatus.RUNNING, backends, hold=hold)
    return RoutingTable.build([route])


class Probe:
    def __init__(self) -> None:
        self.routes: list[Route | None] = []
        self.timeouts = 0
        self.alive = True

    def hold(self, held: HeldRequests, path: str = "/x") -> None:
        held.hold(
            asyncio.get_running_loop(),
            HOST,
            path,
            self.routes.append,
            self._timeout,
            lambda: self.alive,
        )

    def _timeout(self) -> None:
        self.timeouts += 1


async def test_released_to_the_new_instance() -> None:
    held, probe = HeldRequests(5.0), Probe()
    probe.hold(held)
    held.release(table(hold=True))  # still swapping: stays
    assert len(held) == 1 and probe.routes == []
    backend = Backend("web-0", "10.0.0.2", 80)
    held.release(table(hold=False, backends=(backend,)))
    assert len(held) == 0
    [route] = probe.routes
    assert route is not None and route.backends == (backend,)
    await asyncio.sleep(0)
    assert probe.timeouts == 0


async def test_past_the_bound_the_timeout_answers() -> None:
    held, probe = HeldRequests(0.05), Probe()
    probe.hold(held)
    await asyncio.sleep(0.1)
    assert probe.timeouts == 1 and len(held) == 0 and held.expired == 1


async def test_gone_clients_are_dropped_and_stop_expires_all() -> None:
    held, gone, waiting = HeldRequests(5.0), Probe(), Probe()
    gone.hold(held)
    waiting.hold(held)
    gone.alive = False
    held.release(table(hold=True))
    assert len(held) == 1
    held.expire_all()
    assert waiting.timeouts == 1 and gone.timeouts == 0 and len(held) == 0


async def test_a_table_without_the_route_releases_with_none() -> None:
    held, probe = HeldRequests(5.0), Probe()
    probe.hold(held)
    held.release(RoutingTable())
    assert probe.routes == [None]


def test_holding_snapshot_routes_as_running_with_hold() -> None:
    snap = DeploymentSnapshot("web", Status.DEPLOYING, (80,), (), holding=True)
    [route] = build_routes([snap], "example.test").routes
    assert route.status is RouteStatus.RUNNING and route.hold and route.backends == ()
    plain = DeploymentSnapshot("web", Status.DEPLOYING, (80,), ())
    [route] = build_routes([plain], "example.test").routes
    assert route.status is RouteStatus.DEPLOYING and not route.hold
    ready = DeploymentSnapshot("web", Status.RUNNING, (80,), (ReadyInstance("web-0", "10.0.0.2"),))
    [route] = build_routes([ready], "example.test").routes
    assert not route.hold


def test_hold_crosses_the_wire_to_workers() -> None:
    for hold in (True, False):
        original = table(hold=hold)
        assert wire.table_from(wire.table_to(original)).routes == original.routes
    options = wire.options_from(wire.options_to(ProxyOptions(pause_timeout_s=7.0)))
    assert options.pause_timeout_s == 7.0
