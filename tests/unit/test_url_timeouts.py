"""A managed URL's own proxy timeouts (patrd/model/urls.py → routing.py → the proxy's Route)."""

from __future__ import annotations

from typing import Any

import pytest

from patrd.control.route_table import DeploymentSnapshot, ReadyInstance, url_route
from patrd.model.deployment import Status
from patrd.model.errors import SpecError
from patrd.model.urls import UrlRecord, parse_create, parse_update, spec_from_json
from patrd.proxy import wire
from patrd.proxy.router import RoutingTable


def _body(timeouts: Any) -> dict[str, Any]:
    return {
        "domain": "a.example",
        "target": {"deployment": "web", "port": 80},
        "timeouts": timeouts,
    }


def test_timeouts_are_parsed_in_route_order() -> None:
    spec = parse_create(
        _body({"upstream_header_timeout_s": 600, "upstream_idle_timeout_s": 3600.5})
    )
    assert spec.timeouts == (0.0, 600.0, 3600.5, 0.0)
    assert spec.to_json()["timeouts"] == {
        "upstream_header_timeout_s": 600.0,
        "upstream_idle_timeout_s": 3600.5,
    }
    assert spec_from_json(spec.to_json()) == spec


@pytest.mark.parametrize("value", [None, {}, {"body_timeout_s": None}])
def test_no_timeouts_is_the_proxys(value: Any) -> None:
    spec = parse_create(_body(value))
    assert spec.timeouts is None
    assert spec.to_json()["timeouts"] is None


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ([], "timeouts"),
        ({"read_timeout_s": 5}, "timeouts.read_timeout_s"),
        ({"body_timeout_s": 0}, "timeouts.body_timeout_s"),
        ({"send_timeout_s": -1}, "timeouts.send_timeout_s"),
        ({"send_timeout_s": True}, "timeouts.send_timeout_s"),
        ({"upstream_header_timeout_s": "60"}, "timeouts.upstream_header_timeout_s"),
        ({"upstream_idle_timeout_s": 10**9}, "timeouts.upstream_idle_timeout_s"),
    ],
)
def test_bad_timeouts_name_the_field(value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_create(_body(value))
    assert info.value.field == field


def test_update_replaces_or_keeps_timeouts() -> None:
    spec = parse_create(_body({"send_timeout_s": 5}))
    assert parse_update(spec, {"http_redirect": False}).timeouts == (0.0, 0.0, 0.0, 5.0)
    assert parse_update(spec, {"timeouts": None}).timeouts is None
    assert parse_update(spec, {"timeouts": {"body_timeout_s": 9}}).timeouts == (9.0, 0, 0, 0)


def test_route_carries_the_timeouts_to_the_workers() -> None:
    spec = parse_create(_body({"upstream_header_timeout_s": 600}))
    snap = DeploymentSnapshot("web", Status.RUNNING, (80,), (ReadyInstance("web-0", "10.0.0.2"),))
    route = url_route(UrlRecord("u1", spec, 0.0, 0.0), snap)
    assert route.timeouts == (0.0, 600.0, 0.0, 0.0)
    table = wire.table_from(wire.table_to(RoutingTable.build([route])))
    assert table.routes[0].timeouts == (0.0, 600.0, 0.0, 0.0)
    assert table.routes[0] == route
